"""Snapshots and compaction on real servers: catch-up by snapshot, restart from one, retries across one."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from client.kv import KVClient
from paxos.kv.statemachine import StateMachine
from paxos.server.service import SNAPSHOT_DIR, DataDirError, PaxosServer
from paxos.storage import snapshot
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.inprocess import InProcessCluster, in_process_cluster
from tests.harness.polling import wait_until

EVERY = 40  # commands between snapshots
TAIL = 3  # slots kept below a snapshot


def _leader(cluster: InProcessCluster) -> str:
    return wait_until(cluster.leader, "a leader")


def _write_many(kv: KVClient, n: int, prefix: str) -> None:
    for i in range(n):
        kv.set(f"{prefix}{i % 25}", f"{prefix}-{i}")


def _snapshot_index(cluster: InProcessCluster, name: str) -> int:
    server = cluster.servers[name]
    return int(cluster.call(lambda: server.replica.snapshot_index))


def _raw_write(address: str, command: kv_pb2.Command) -> kv_pb2.WriteReply:
    with grpc.insecure_channel(address) as channel:
        reply: kv_pb2.WriteReply = kv_pb2_grpc.KVStub(channel).Write(kv_pb2.WriteRequest(command=command), timeout=10)
        return reply


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_a_follower_down_while_the_others_compact_catches_up_by_snapshot(tmp_path: Path, tls: bool) -> None:
    tls_dir = tmp_path / "tls" if tls else None
    with in_process_cluster(tmp_path, 3, tls_dir, snapshot_every=EVERY, snapshot_tail=TAIL) as cluster:
        leader = _leader(cluster)
        follower = next(m.name for m in cluster.members if m.name != leader)
        with KVClient(cluster.members, timeout=10, tls_dir=tls_dir) as kv:
            kv.set("before", "1")
            cluster.stop(follower)
            _write_many(kv, 6 * EVERY, "k")
            # The others compacted past everything the follower has.
            for name in cluster.servers:
                if name != follower:
                    wait_until(lambda n=name: _snapshot_index(cluster, n) > 4 * EVERY, f"{name} to snapshot")
            log_sizes = {n: cluster.call(cluster.servers[n].storage.log_bytes) for n in cluster.servers}
            cluster.restart(follower)
            server = cluster.servers[follower]
            wait_until(
                lambda: cluster.call(lambda: server.snapshots_installed) >= 1, "the follower to install a snapshot"
            )
            kv.set("after", "2")
            leader_applied = cluster.call(lambda: cluster.servers[leader].store.applied_index)
            wait_until(
                lambda: cluster.call(lambda: server.store.applied_index) >= leader_applied,
                "the follower to catch up on the log after the snapshot",
            )
            data = cluster.call(lambda: dict(server.store.data))
            assert data == cluster.call(lambda: dict(cluster.servers[leader].store.data))
            assert data["before"] == "1" and data["after"] == "2" and data["k0"].startswith("k-")
            # Its snapshot dir holds what it installed.
            files = snapshot.snapshot_files(tmp_path / follower / SNAPSHOT_DIR)
            assert files and snapshot.verify(files[0]).applied_index > 4 * EVERY
        # The log stayed small: whole segments below a snapshot are gone.
        assert max(log_sizes.values()) < 200_000, log_sizes


def test_a_server_restarts_from_its_snapshot_and_a_retried_write_applies_once(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3, snapshot_every=EVERY, snapshot_tail=TAIL) as cluster:
        leader = _leader(cluster)
        address = next(m.address for m in cluster.members if m.name == leader)
        with grpc.insecure_channel(address) as channel:
            registered = kv_pb2_grpc.KVStub(channel).Register(kv_pb2.RegisterRequest(), timeout=10)
        assert registered.status == kv_pb2.OK
        first = kv_pb2.Command(session_id=registered.session_id, seq=0, first_unacked=0)
        first.set.key, first.set.value = "counter", "first"
        assert _raw_write(address, first).status == kv_pb2.OK
        with KVClient(cluster.members, timeout=10) as kv:
            kv.set("counter", "second")  # the retry below must not overwrite this
            _write_many(kv, 3 * EVERY, "k")
            wait_until(lambda: _snapshot_index(cluster, leader) > 2 * EVERY, "a snapshot past the first write")
            for name in list(cluster.servers):
                cluster.stop(name)
            for name in list(cluster.servers):
                cluster.restart(name)
            leader = _leader(cluster)
            address = next(m.address for m in cluster.members if m.name == leader)
            # Every server came back from its snapshot (its state starts there).
            assert all(_snapshot_index(cluster, n) > 2 * EVERY for n in cluster.servers)
            retry = _raw_write(address, first)
            assert retry.status == kv_pb2.OK
            assert kv.get("counter") == "second"
            assert kv.get("k1") is not None


def test_a_damaged_newest_snapshot_falls_back_or_stops_naming_the_file(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3, snapshot_every=EVERY, snapshot_tail=TAIL) as cluster:
        _leader(cluster)
        with KVClient(cluster.members, timeout=10) as kv:
            # With the client's session registration, 5 * EVERY commands: the
            # newest snapshot covers the last slot, so no log is left below it.
            _write_many(kv, 5 * EVERY - 1, "k")
        members = cluster.members
        name = members[0].name
        wait_until(lambda: len(snapshot.snapshot_files(tmp_path / name / SNAPSHOT_DIR)) == 2, "two snapshots")
    directory = tmp_path / name / SNAPSHOT_DIR
    newest = snapshot.snapshot_files(directory)[0]
    newest_index = snapshot.verify(newest).applied_index
    expected = _load_data(members, name, tmp_path)

    # A damaged snapshot newer than any slot the log has lost (as a crash
    # after writing it and before compacting would leave, had it then been
    # damaged): the server falls back to the good one and replays the log.
    damaged_extra = directory / snapshot.file_name(newest_index + 1)
    damaged_extra.write_bytes(_damaged(newest.read_bytes()))
    assert _load_data(members, name, tmp_path) == expected

    # The newest is damaged and the log was compacted up to it, so it does
    # not reach down to the older one: the server refuses to start, naming
    # the file (python -m paxos exits 4 on this error).
    damaged_extra.unlink()
    newest.write_bytes(_damaged(newest.read_bytes()))
    with pytest.raises(DataDirError, match=newest.name):
        PaxosServer(members, name, tmp_path / name)


def _damaged(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    return bytes(flipped)


def _load_data(members: list, name: str, tmp_path: Path) -> dict[str, str]:  # type: ignore[type-arg]
    server = PaxosServer(members, name, tmp_path / name)
    try:
        # What it will apply once running: the snapshot plus the log's chosen slots.
        core = server.core
        store = server.store
        for slot in range(store.applied_index + 1, core.commit_index + 1):
            store.apply(slot, core.chosen[slot])
        return dict(store.data)
    finally:
        server.storage.close()
        server._data_dir_lock.release()


def test_an_interrupted_snapshot_transfer_is_started_again_never_half_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paxos.common import limits
    from paxos.server import service as server

    monkeypatch.setattr(limits, "SNAPSHOT_CHUNK_BYTES", 64)  # many chunks, so the cut lands mid-file
    serve = server._PeerService.FetchSnapshot
    calls = {"n": 0}

    async def cut_first_transfer(self, request, context):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        sent = 0
        async for chunk in serve(self, request, context):
            if calls["n"] == 1 and sent == 3:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection cut (test)")
            sent += 1
            yield chunk

    monkeypatch.setattr(server._PeerService, "FetchSnapshot", cut_first_transfer)
    with in_process_cluster(tmp_path, 3, snapshot_every=EVERY, snapshot_tail=TAIL) as cluster:
        leader = _leader(cluster)
        follower = next(m.name for m in cluster.members if m.name != leader)
        with KVClient(cluster.members, timeout=10) as kv:
            cluster.stop(follower)
            _write_many(kv, 4 * EVERY, "k")
            wait_until(lambda: _snapshot_index(cluster, leader) > 2 * EVERY, "the leader to snapshot")
            cluster.restart(follower)
            server_ = cluster.servers[follower]
            wait_until(lambda: cluster.call(lambda: server_.snapshots_installed) >= 1, "a snapshot installed")
            assert calls["n"] >= 2  # the first transfer was cut and a new one made
            kv.set("after", "1")
            wait_until(lambda: cluster.call(lambda: server_.store.get("after")) == "1", "the follower to catch up")
            assert cluster.call(lambda: dict(server_.store.data)) == cluster.call(
                lambda: dict(cluster.servers[leader].store.data)
            )
        directory = tmp_path / follower / SNAPSHOT_DIR
        assert not list(directory.glob("*.tmp"))  # nothing half-written left behind


def test_a_crash_after_a_snapshot_is_renamed_and_before_compaction_loses_nothing(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3, snapshot_every=10_000) as cluster:  # no snapshot of its own
        _leader(cluster)
        with KVClient(cluster.members, timeout=10) as kv:
            _write_many(kv, 80, "k")
            members = cluster.members
            name = members[0].name
            leader_applied = cluster.call(lambda: max(s.store.applied_index for s in cluster.servers.values()))
            wait_until(
                lambda: cluster.call(lambda: cluster.servers[name].store.applied_index) >= leader_applied,
                "the server to apply everything",
            )
            cluster.stop(name)
            # What the snapshot thread had written when the process died: the
            # file renamed into place, the log not compacted yet.
            server = PaxosServer(members, name, tmp_path / name)
            expected = dict(server.store.data) | _log_after_snapshot(server)
            half = server.core.commit_index // 2
            replayed = _state_at(server, half)
            snapshot.write_snapshot(tmp_path / name / SNAPSHOT_DIR, replayed.freeze(), server.identity.cluster_id, [])
            log_before = server.storage.log_bytes()
            server.storage.close()
            server._data_dir_lock.release()
            cluster.restart(name)
            restarted = cluster.servers[name]
            assert _snapshot_index(cluster, name) == half
            assert cluster.call(restarted.storage.log_bytes) == log_before  # nothing was compacted
            wait_until(
                lambda: cluster.call(lambda: dict(restarted.store.data)) == expected,
                "the log replayed over the snapshot",
            )


def _log_after_snapshot(server: PaxosServer) -> dict[str, str]:
    """The data once the server applies its whole log (what a running server would hold)."""
    store = server.store
    core = server.core
    for slot in range(store.applied_index + 1, core.commit_index + 1):
        store.apply(slot, core.chosen[slot])
    return dict(store.data)


def _state_at(server: PaxosServer, index: int) -> StateMachine:
    store = StateMachine()
    for slot in range(1, index + 1):
        store.apply(slot, server.core.chosen[slot])
    return store


def test_with_tls_only_a_member_certificate_gets_a_snapshot(tmp_path: Path) -> None:
    from paxos.common.tlsfiles import client_credentials
    from protos import peer_pb2, peer_pb2_grpc

    tls_dir = tmp_path / "tls"
    with in_process_cluster(tmp_path, 3, tls_dir, snapshot_every=EVERY, snapshot_tail=TAIL) as cluster:
        leader = _leader(cluster)
        with KVClient(cluster.members, timeout=10, tls_dir=tls_dir) as kv:
            _write_many(kv, 2 * EVERY, "k")
        wait_until(lambda: _snapshot_index(cluster, leader) > 0, "a snapshot")
        server = cluster.servers[leader]
        member = next(m for m in cluster.members if m.name == leader)
        other = next(m for m in cluster.members if m.name != leader)
        # Everything right but the certificate: the client's, claiming to be a member.
        request = peer_pb2.SnapshotRequest(
            sender=server.identity.ids[other.name], cluster_id=server.identity.cluster_id, receiver=server.node_id
        )
        with grpc.secure_channel(member.address, client_credentials(tls_dir)) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                list(peer_pb2_grpc.PeerStub(channel).FetchSnapshot(request, timeout=10))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
