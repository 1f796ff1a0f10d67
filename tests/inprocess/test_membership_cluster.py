"""Membership changes on real servers: --join, add, promote, remove (the leader too), and a removed server's data."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from client import cli
from client.kv import KVClient, KVError
from paxos.common.hostfile import Member
from paxos.server.service import PaxosServer, discover_cluster
from paxos.server.tlsaccess import CLIENT_AUTH_CERT
from paxos.storage.datadir import DataDirError
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.inprocess import InProcessCluster, free_ports, in_process_cluster
from tests.harness.polling import wait_until


def _stub(address: str) -> tuple[grpc.Channel, kv_pb2_grpc.KVStub]:
    channel = grpc.insecure_channel(address)
    return channel, kv_pb2_grpc.KVStub(channel)


def _call(address: str, method: str, request: object) -> object:
    channel, stub = _stub(address)
    with channel:
        return getattr(stub, method)(request, timeout=10)


def _leader_address(cluster: InProcessCluster, members: list[Member]) -> str:
    def leader() -> str | None:
        for m in members:
            if m.name in cluster.stopped:
                continue
            server = cluster.servers[m.name]
            if cluster.call(server.core.is_leader):
                return m.address
        return None

    return wait_until(leader, "a leader")


def _change(cluster: InProcessCluster, members: list[Member], request: kv_pb2.ChangeMembersRequest) -> str:
    """Ask the leader for one step, retrying while it says to; the error of a refusal, or ''."""

    def attempt() -> tuple[str] | None:
        reply = _call(_leader_address(cluster, members), "ChangeMembers", request)
        assert isinstance(reply, kv_pb2.ChangeMembersReply)
        if reply.status == kv_pb2.OK:
            return ("",)
        if reply.status == kv_pb2.INVALID and "behind" not in reply.error and "not finished" not in reply.error:
            return (reply.error,)
        return None  # not the leader any more, behind, busy: again

    return wait_until(attempt, f"the change {request}", timeout=60)[0]


def _members(address: str) -> kv_pb2.MembersReply:
    reply = _call(address, "Members", kv_pb2.MembersRequest())
    assert isinstance(reply, kv_pb2.MembersReply)
    return reply


def _status(address: str) -> kv_pb2.NodeStatus:
    reply = _call(address, "Status", kv_pb2.StatusRequest())
    assert isinstance(reply, kv_pb2.NodeStatus)
    return reply


def _join(cluster: InProcessCluster, name: str) -> Member:
    """Start a server as ``--join`` does: learn the cluster, then wait outside it."""
    # Not the port of a member that is only stopped: it is free now, but that member will want it back.
    taken = {m.port for m in cluster.members}
    port = next(p for p in free_ports(len(taken) + 1) if p not in taken)
    member = Member(name, "127.0.0.1", port)
    hostfile = [*cluster.members, member]
    target = cluster.run(discover_cluster(hostfile, name, None, timeout=30))
    server = cluster.call(lambda: PaxosServer(hostfile, name, cluster.tmp_path / name, join=target))
    cluster.servers[name] = server
    cluster.run(server.start(member.address))
    return member


def test_a_server_joins_is_promoted_and_the_old_leader_leaves(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        members = list(cluster.members)
        with KVClient(members, timeout=20) as kv:
            for i in range(30):
                kv.set(f"k{i}", f"v{i}")
            newcomer = _join(cluster, "s3")
            status = _status(newcomer.address)
            assert status.membership == "joining"
            assert status.cluster_id == _members(members[0].address).cluster_id
            add = kv_pb2.MemberInfo(name="s3", address=newcomer.address, id=status.member_id)
            assert _change(cluster, members, kv_pb2.ChangeMembersRequest(add=add)) == ""
            members.append(newcomer)
            wait_until(lambda: _status(newcomer.address).membership == "learner", "s3 to know it is a learner")
            assert _change(cluster, members, kv_pb2.ChangeMembersRequest(promote="s3")) == ""
            wait_until(lambda: _status(newcomer.address).applied_index >= 30, "s3 to catch up")
            wait_until(lambda: _status(newcomer.address).membership == "member", "s3 to know it votes")
            listed = _members(_leader_address(cluster, members))
            assert sorted((m.name, m.voter) for m in listed.members) == [(f"s{i}", True) for i in range(4)]
            # The leader removes itself and hands over; writes go on.
            leader_address = _leader_address(cluster, members)
            leader = next(m for m in members if m.address == leader_address)
            assert _change(cluster, members, kv_pb2.ChangeMembersRequest(remove=leader.name)) == ""
            wait_until(lambda: _status(leader.address).membership == "removed", "the old leader to say it left")
            members.remove(leader)
            new_leader = _leader_address(cluster, members)
            assert new_leader != leader.address
        with KVClient([*members], timeout=20) as kv:
            kv.set("after", "yes")
            assert kv.get("after") == "yes"
            assert kv.get("k29") == "v29"
        names = sorted(m.name for m in _members(new_leader).members)
        assert names == sorted(m.name for m in members)
        # The removed server refuses to come back with its old data.
        cluster.stop(leader.name)
        with pytest.raises(DataDirError, match="was removed from the cluster"):
            PaxosServer(cluster.members, leader.name, tmp_path / leader.name)


def test_bad_changes_are_refused_and_leave_the_configuration_valid(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        members = list(cluster.members)
        leader = _leader_address(cluster, members)
        before = _members(leader).members
        cases = [
            (kv_pb2.ChangeMembersRequest(add=kv_pb2.MemberInfo(name="s1", address="127.0.0.1:1", id=5)), "already"),
            (kv_pb2.ChangeMembersRequest(add=kv_pb2.MemberInfo(name="bad name", address="h:1", id=5)), "valid"),
            (kv_pb2.ChangeMembersRequest(add=kv_pb2.MemberInfo(name="x", address="nowhere", id=5)), "HOST:PORT"),
            (kv_pb2.ChangeMembersRequest(add=kv_pb2.MemberInfo(name="x", address="h:1")), "id"),
            (kv_pb2.ChangeMembersRequest(remove="nobody"), "no member"),
            (kv_pb2.ChangeMembersRequest(promote="s0"), "voter already"),
            (kv_pb2.ChangeMembersRequest(), "names no change"),
        ]
        for request, expected in cases:
            assert expected in _change(cluster, members, request)
        follower = next(m.address for m in members if m.address != leader)
        reply = _call(follower, "ChangeMembers", kv_pb2.ChangeMembersRequest(remove="s0"))
        assert isinstance(reply, kv_pb2.ChangeMembersReply) and reply.status == kv_pb2.NOT_LEADER
        assert _members(leader).members == before


def test_the_client_library_syncs_the_cluster_to_a_hostfile(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        with KVClient(cluster.members, timeout=20) as kv:
            kv.set("before", "1")
            joined = [_join(cluster, "s3"), _join(cluster, "s4")]
            wanted = [*cluster.members[1:], *joined]  # s0 leaves, s3 and s4 join
            hostfile = tmp_path / "hostfile-next.txt"
            hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in wanted))
            steps: list[str] = []
            final = kv.sync_members(hostfile, timeout=120, progress=steps.append)
            assert sorted((m.name, m.voter) for m in final) == sorted((m.name, True) for m in wanted)
            # Adding before removing: both joined before s0 left.
            removal = next(i for i, s in enumerate(steps) if "s0" in s)
            assert all(any(name in s for s in steps[:removal]) for name in ("s3", "s4")), steps
            listed = kv.members()
            assert sorted(m.name for m in listed) == ["s1", "s2", "s3", "s4"]
            assert sum(m.leader for m in listed) == 1
            # Run again: nothing to do.
            assert sorted(m.name for m in kv.sync_members(hostfile, timeout=30)) == ["s1", "s2", "s3", "s4"]
        # A client that knows only the old servers still finds the cluster.
        with KVClient(cluster.members[1:2], timeout=20) as kv:
            kv.set("after", "2")
            assert kv.get("before") == "1"


def test_a_learner_that_went_away_is_never_promoted_and_can_be_removed(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        members = list(cluster.members)
        newcomer = _join(cluster, "s3")
        status = _status(newcomer.address)
        # Cut off from the members before it is added (it still answers the
        # leader's check that it is waiting to join), then gone for good: it
        # never answers the leader's ballot, so nothing races the promotion check.
        server = cluster.servers["s3"]
        cluster.call(server.set_partition, [m.name for m in members])
        add = kv_pb2.MemberInfo(name="s3", address=newcomer.address, id=status.member_id)
        assert _change(cluster, members, kv_pb2.ChangeMembersRequest(add=add)) == ""
        cluster.stop("s3")
        reply = _call(_leader_address(cluster, members), "ChangeMembers", kv_pb2.ChangeMembersRequest(promote="s3"))
        assert isinstance(reply, kv_pb2.ChangeMembersReply)
        assert reply.status == kv_pb2.INVALID and "behind" in reply.error, reply
        assert _change(cluster, members, kv_pb2.ChangeMembersRequest(remove="s3")) == ""
        listed = _members(_leader_address(cluster, members))
        assert sorted((m.name, m.voter) for m in listed.members) == [("s0", True), ("s1", True), ("s2", True)]
        with KVClient(members, timeout=20) as kv:
            kv.set("still", "works")


def test_a_server_that_missed_changes_catches_up_from_a_leader_it_never_heard_of(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 4) as cluster:
        members = list(cluster.members)
        cluster.stop("s3")
        for name in ("s4", "s5"):
            joined = _join(cluster, name)
            status = _status(joined.address)
            add = kv_pb2.MemberInfo(name=name, address=joined.address, id=status.member_id)
            assert _change(cluster, members, kv_pb2.ChangeMembersRequest(add=add)) == ""
            members.append(joined)
            assert _change(cluster, members, kv_pb2.ChangeMembersRequest(promote=name)) == ""
        for name in ("s0", "s1", "s2"):  # they stay up, idle, as removed servers do
            assert _change(cluster, members, kv_pb2.ChangeMembersRequest(remove=name)) == ""
        live = [m for m in members if m.name in ("s4", "s5")]
        with KVClient(live, timeout=20) as kv:
            kv.set("while s3 was away", "1")
        # s3 knows only s0..s3; the leader is s4 or s5, which it never heard of.
        cluster.restart("s3")
        s3 = next(m for m in members if m.name == "s3")
        leader = _leader_address(cluster, live)
        wait_until(
            lambda: _status(s3.address).applied_index >= _status(leader).commit_index, "s3 to catch up", timeout=60
        )
        wait_until(lambda: _status(s3.address).leader in ("s4", "s5"), "s3 to follow the new leader", timeout=60)


def test_a_server_follows_a_change_it_learns_of_only_from_a_snapshot(tmp_path: Path) -> None:
    # s2 is away while s3 is added and the others compact the change into
    # their snapshots: s2 learns of it only from the snapshot it installs,
    # and must then know s3 (its address, a stream to it) as if it had
    # applied the change from the log.
    every, tail = 20, 2
    with in_process_cluster(tmp_path, 3, snapshot_every=every, snapshot_tail=tail) as cluster:
        members = list(cluster.members)
        cluster.stop("s2")
        joined = _join(cluster, "s3")
        add = kv_pb2.MemberInfo(name="s3", address=joined.address, id=_status(joined.address).member_id)
        assert _change(cluster, members, kv_pb2.ChangeMembersRequest(add=add)) == ""
        live = [cluster.servers[name] for name in ("s0", "s1")]
        added_at = max(cluster.call(lambda s=s: s.store.applied_index) for s in live)
        with KVClient(members[:2], timeout=20) as kv:
            for i in range(3 * every):
                kv.set(f"k{i % 10}", str(i))

        def compacted_past_the_change() -> bool:
            return all(cluster.call(lambda s=s: s.replica.snapshot_index) > added_at + tail for s in live)

        wait_until(compacted_past_the_change, "the others to compact past the change")
        cluster.restart("s2")
        s2 = cluster.servers["s2"]
        wait_until(lambda: cluster.call(lambda: s2.snapshots_installed) >= 1, "s2 to install a snapshot")
        # Followed in the same step as the install: no waiting for it.
        assert cluster.call(lambda: s2.core.membership.get(add.id) is not None)
        assert cluster.call(lambda: add.id in s2.members), "s3 unknown to s2's address book"
        assert cluster.call(lambda: add.id in s2.links), "no stream from s2 to s3"


def test_a_server_replaced_under_its_name_rejoins_over_tls(tmp_path: Path) -> None:
    from paxos.server.tlsserver import ServerTls

    tls_dir = tmp_path / "tls"
    with in_process_cluster(tmp_path, 3, tls_dir) as cluster:
        members = list(cluster.members)
        with KVClient(members, timeout=20, tls_dir=tls_dir) as kv:
            kv.set("before", "1")
            kv.remove_member("s2")
            cluster.stop("s2")
            shutil.rmtree(tmp_path / "s2")  # a new machine under the old name
            s2 = next(m for m in members if m.name == "s2")
            tls = ServerTls(tls_dir, "s2", CLIENT_AUTH_CERT)
            target = cluster.run(discover_cluster(members, "s2", tls, timeout=30))
            server = cluster.call(lambda: PaxosServer(members, "s2", tmp_path / "s2", tls=tls, join=target))
            cluster.servers["s2"] = server
            cluster.stopped.discard("s2")
            cluster.run(server.start(s2.address))
            kv.add_member("s2", s2.address)
            wait_until(lambda: _promoted(kv, "s2"), "s2 to be promoted", timeout=60)
            kv.set("after", "2")
            wait_until(lambda: cluster.call(lambda: server.store.get("after")) == "2", "s2 to apply new writes")
            assert cluster.call(lambda: server.store.get("before")) == "1"


def _promoted(kv: KVClient, name: str) -> bool:
    try:
        kv.promote_member(name)
    except KVError:
        pass
    return any(m.name == name and m.voter for m in kv.members())


def test_the_leader_adds_only_a_server_waiting_to_join_this_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever asks, the leader asks the server first: another cluster's, a member, a stranger are refused."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    other_members = [Member("o0", "127.0.0.1", free_ports(1)[0])]
    with (
        in_process_cluster(tmp_path / "a", 3) as cluster,
        in_process_cluster(tmp_path / "b", 1, members=other_members) as other,
    ):
        members = list(cluster.members)
        leader = _leader_address(cluster, members)
        _leader_address(other, other.members)
        foreign = _join(other, "j")  # started with --join, against the other cluster
        mine = _join(cluster, "s3")
        before = _members(leader).members

        def add(name: str, address: str, member_id: int) -> str:
            info = kv_pb2.MemberInfo(name=name, address=address, id=member_id)
            return _change(cluster, members, kv_pb2.ChangeMembersRequest(add=info))

        assert "another cluster" in add("j", foreign.address, _status(foreign.address).member_id)
        assert "not 'joining'" in add("o0", other_members[0].address, _status(other_members[0].address).member_id)
        assert "take the name and id" in add("s3", mine.address, _status(mine.address).member_id + 1)
        assert "take the name and id" in add("s9", mine.address, _status(mine.address).member_id)
        assert "does not answer" in add("s4", f"127.0.0.1:{free_ports(1)[0]}", 77)
        assert _members(_leader_address(cluster, members)).members == before
        hostfile = tmp_path / "hostfile.txt"
        hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in members))
        assert cli.main(["-h", str(hostfile), "members", "add", "j", foreign.address]) == cli.EXIT_USAGE
        assert "not this one" in capsys.readouterr().err
        assert add("s3", mine.address, _status(mine.address).member_id) == ""
