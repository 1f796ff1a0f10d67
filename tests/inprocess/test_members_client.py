"""The client's membership calls and the ``members`` command, against scripted in-process servers.

A ``FakeCluster`` runs one small grpc.aio KV server per name, on one event
loop of the module's: each answers ``Members``, ``ChangeMembers`` and
``Status`` from a configuration the test scripts (who leads, who is down,
how often a learner is still behind, which change is refused, what a
joining server reports), and records every change asked of the leader.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import AsyncKVClient, InvalidRequest, KVClient, Member, SyncTimeout, aio, cli
from client.members import Step, View, next_step
from paxos.common.hostfile import parse_hostfile, parse_hostfile_text
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.loop import LoopThread
from tools.localcluster import free_ports

CLUSTER_ID = 0xC1C1
OTHER_CLUSTER_ID = 0xBAD
LATE_SECONDS = 0.5  # a late reply; the client's attempt is cut shorter (see test_a_change_answered_late_counts_once)
BEHIND = "learner {name} is 340 slots behind the leader; it is promoted once it is within 100"


@dataclass
class Entry:
    name: str
    address: str
    voter: bool
    id: int
    applied_index: int = 40


class FakeCluster:
    """Scripted servers sharing one configuration; see the module docstring."""

    def __init__(self, loop: LoopThread, voters: list[str], spares: list[str]) -> None:
        self.loop = loop
        names = voters + spares
        self.addresses = {n: f"127.0.0.1:{port}" for n, port in zip(names, free_ports(len(names)), strict=True)}
        self.ids = {n: 0x100 + i for i, n in enumerate(names)}
        self.config = {n: Entry(n, self.addresses[n], True, self.ids[n]) for n in voters}
        self.leader = voters[0]
        # How a follower answers Members: "redirect" (NOT_LEADER naming the leader, with the
        # members) or "view" (OK with its own view, naming the leader; stale_view if set).
        self.follower_answers = "redirect"
        self.stale_view: list[Entry] | None = None
        self.joining: dict[str, int] = {}  # a server started with --join: the cluster id it reports
        self.behind: dict[str, int] = {}  # promotions of this learner refused before one is made
        self.refusals: list[str] = []  # the next changes asked for are refused with these errors
        self.late_replies = 0  # the next changes are made, and answered only after the client gave up waiting
        self.changes: list[tuple[str, str, str]] = []  # (kind, name, "ok" | the refusal) at the leader
        self.calls: list[tuple[str, str]] = []  # (server, rpc), every call
        self._servers: dict[str, grpc.aio.Server] = {}

    # -- scripting

    def start(self, *names: str) -> None:
        for name in names:
            self.loop.run(self._start(name))

    async def _start(self, name: str) -> None:
        server = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(FakeServer(self, name), server)
        server.add_insecure_port(self.addresses[name])
        await server.start()
        self._servers[name] = server

    def stop(self, name: str) -> None:
        self.loop.run(self._servers.pop(name).stop(None))

    def stop_all(self) -> None:
        for name in list(self._servers):
            self.stop(name)

    def hostfile(self, path: Path, *names: str) -> Path:
        path.write_text("".join(f"{n} {self.addresses[n]}\n" for n in names))
        return path

    def infos(self, entries: list[Entry] | None = None) -> list[kv_pb2.MemberInfo]:
        chosen = sorted(self.config.values(), key=lambda e: e.name) if entries is None else entries
        return [
            kv_pb2.MemberInfo(
                name=e.name,
                address=e.address,
                voter=e.voter,
                leader=e.name == self.leader,
                applied_index=e.applied_index,
                id=e.id,
            )
            for e in chosen
        ]

    def made(self) -> list[tuple[str, str]]:
        """The changes made, in order."""
        return [(kind, name) for kind, name, result in self.changes if result == "ok"]

    def voters(self) -> list[str]:
        return sorted(n for n, e in self.config.items() if e.voter)


class FakeServer(kv_pb2_grpc.KVServicer):
    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.c = cluster
        self.name = name

    async def Members(self, request: kv_pb2.MembersRequest, context: Any) -> kv_pb2.MembersReply:
        c = self.c
        c.calls.append((self.name, "Members"))
        if self.name == c.leader:
            return kv_pb2.MembersReply(status=kv_pb2.OK, members=c.infos(), cluster_id=CLUSTER_ID)
        if c.follower_answers == "redirect":
            return kv_pb2.MembersReply(
                status=kv_pb2.NOT_LEADER, leader_hint=c.leader, members=c.infos(), cluster_id=CLUSTER_ID
            )
        return kv_pb2.MembersReply(
            status=kv_pb2.OK, leader_hint=c.leader, members=c.infos(c.stale_view), cluster_id=CLUSTER_ID
        )

    async def ChangeMembers(self, request: kv_pb2.ChangeMembersRequest, context: Any) -> kv_pb2.ChangeMembersReply:
        c = self.c
        c.calls.append((self.name, "ChangeMembers"))
        if self.name != c.leader:
            return kv_pb2.ChangeMembersReply(status=kv_pb2.NOT_LEADER, leader_hint=c.leader)
        kind = request.WhichOneof("change")
        assert kind is not None
        name = request.add.name if kind == "add" else str(getattr(request, kind))
        error = self._change(kind, name, request)
        c.changes.append((kind, name, error or "ok"))
        if c.late_replies:
            c.late_replies -= 1
            await asyncio.sleep(LATE_SECONDS)
        if error:
            return kv_pb2.ChangeMembersReply(status=kv_pb2.INVALID, error=error)
        return kv_pb2.ChangeMembersReply(status=kv_pb2.OK, members=c.infos())

    def _change(self, kind: str, name: str, request: kv_pb2.ChangeMembersRequest) -> str:
        c = self.c
        if c.refusals:
            return c.refusals.pop(0)
        if kind == "add":
            if name in c.config or request.add.id != c.ids[name]:
                return f"cannot add {name}"
            c.config[name] = Entry(name, request.add.address, False, request.add.id)
        elif kind == "promote":
            if c.behind.get(name, 0) > 0:
                c.behind[name] -= 1
                return BEHIND.format(name=name)
            c.config[name].voter = True
        else:
            del c.config[name]
            if name == c.leader:
                c.leader = c.voters()[0]
        return ""

    async def Session(
        self, requests: AsyncIterator[kv_pb2.SessionBatch], context: Any
    ) -> AsyncIterator[kv_pb2.SessionReplies]:
        """Reads only: the leader holds one key, "k", whose value names it; a follower redirects."""
        c = self.c
        async for batch in requests:
            c.calls.append((self.name, "Session"))
            replies = []
            for request in batch.requests:
                if self.name == c.leader:
                    get = kv_pb2.GetReply(status=kv_pb2.OK, found=request.get.key == "k", value=f"at {self.name}")
                else:
                    get = kv_pb2.GetReply(status=kv_pb2.NOT_LEADER, leader_hint=c.leader)
                replies.append(kv_pb2.SessionReply(id=request.id, get=get))
            yield kv_pb2.SessionReplies(replies=replies)

    async def Status(self, request: kv_pb2.StatusRequest, context: Any) -> kv_pb2.NodeStatus:
        c = self.c
        c.calls.append((self.name, "Status"))
        entry = c.config.get(self.name)
        if entry is not None:
            membership, cluster_id = ("member" if entry.voter else "learner"), CLUSTER_ID
        elif self.name in c.joining:
            membership, cluster_id = "joining", c.joining[self.name]
        else:
            membership, cluster_id = "removed", CLUSTER_ID
        return kv_pb2.NodeStatus(
            name=self.name,
            address=c.addresses[self.name],
            role="leader" if self.name == c.leader else "follower",
            membership=membership,
            member_id=c.ids[self.name],
            cluster_id=cluster_id,
        )


@pytest.fixture(autouse=True)
def quick_rechecks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync asks again soon after a learner is still behind (the wait is the client's, not the test's)."""
    monkeypatch.setattr(aio, "SYNC_RECHECK_SECONDS", 0.02)
    monkeypatch.delenv("PAXOSKV_TLS_DIR", raising=False)


@pytest.fixture
def fake(loop: LoopThread) -> Iterator[FakeCluster]:
    cluster = FakeCluster(loop, ["n1", "n2", "n3"], ["n4", "n5"])
    cluster.start("n1", "n2", "n3")
    yield cluster
    cluster.stop_all()


@pytest.fixture
def clients() -> Iterator[list[KVClient]]:
    made: list[KVClient] = []
    yield made
    for kv in made:
        kv.close()


def client_of(clients: list[KVClient], hostfile: Path, timeout: float = 5.0) -> KVClient:
    kv = KVClient.from_hostfile(hostfile, timeout=timeout)
    clients.append(kv)
    return kv


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> Run:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


# ------------------------------------------------------------------ members()


@pytest.mark.parametrize("kind", ["KVClient", "AsyncKVClient"])
def test_members_follows_the_leader(fake: FakeCluster, loop: LoopThread, tmp_path: Path, kind: str) -> None:
    fake.leader = "n3"
    hostfile = fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3")
    if kind == "KVClient":
        with KVClient.from_hostfile(hostfile, timeout=5) as kv:
            found = kv.members()
    else:

        async def body() -> list[Member]:
            async with AsyncKVClient.from_hostfile(hostfile, timeout=5) as akv:
                return await akv.members()

        found = loop.run(body())
    assert found == [
        Member("n1", fake.addresses["n1"], True, False, 40, fake.ids["n1"]),
        Member("n2", fake.addresses["n2"], True, False, 40, fake.ids["n2"]),
        Member("n3", fake.addresses["n3"], True, True, 40, fake.ids["n3"]),
    ]
    assert ("n1", "Members") in fake.calls and fake.calls[-1] == ("n3", "Members")


def test_members_trusts_the_leader_over_a_followers_view(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.leader, fake.follower_answers = "n2", "view"
    fake.stale_view = [Entry("n1", fake.addresses["n1"], True, fake.ids["n1"])]  # lags behind
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    assert [(m.name, m.leader) for m in kv.members()] == [("n1", False), ("n2", True), ("n3", False)]


def test_members_without_a_leader_is_the_first_answer(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.leader, fake.follower_answers = "", "view"
    fake.stale_view = [Entry("n1", fake.addresses["n1"], True, fake.ids["n1"])]
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    assert [m.name for m in kv.members()] == ["n1"]


def test_a_client_with_an_old_hostfile_learns_a_new_member(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    # The cluster has moved on to n1 and n4, n4 leading; the client's hostfile lists n1 alone.
    fake.start("n4")
    fake.config["n4"] = Entry("n4", fake.addresses["n4"], True, fake.ids["n4"])
    del fake.config["n2"], fake.config["n3"]
    fake.leader = "n4"
    kv = client_of(clients, fake.hostfile(tmp_path / "old-hostfile.txt", "n1"))
    assert [s.name for s in kv.servers] == ["n1"]
    assert [(m.name, m.leader) for m in kv.members()] == [("n1", False), ("n4", True)]
    assert [s.name for s in kv.servers] == ["n1", "n4"]
    assert fake.calls[-1] == ("n4", "Members")
    # With n1, the one server it was given, gone, the client goes on through what it learned.
    fake.stop("n1")
    assert kv.members()[1].leader
    with pytest.raises(InvalidRequest, match="no member named 'n5'"):
        kv.remove_member("n5")


def test_a_read_redirected_to_an_unknown_leader_finds_it(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.start("n4")
    fake.config["n4"] = Entry("n4", fake.addresses["n4"], True, fake.ids["n4"])
    fake.leader = "n4"
    kv = client_of(clients, fake.hostfile(tmp_path / "old-hostfile.txt", "n1"))
    assert kv.get("k") == "at n4"  # n1 names n4; the client asks n1 where that is
    assert [s.name for s in kv.servers] == ["n1", "n2", "n3", "n4"]
    assert ("n1", "Members") in fake.calls and fake.calls[-1] == ("n4", "Session")


def test_a_leader_hint_naming_an_unknown_server_is_looked_up(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.start("n4")
    fake.config["n4"] = Entry("n4", fake.addresses["n4"], False, fake.ids["n4"])
    fake.leader = "n2"
    kv = client_of(clients, fake.hostfile(tmp_path / "old-hostfile.txt", "n1", "n3"))
    after = kv.promote_member("n4")  # n1 or n3 names n2, which the client learns from their members
    assert [s.name for s in kv.servers] == ["n1", "n3", "n2", "n4"]
    assert fake.made() == [("promote", "n4")]
    assert next(m for m in after if m.name == "n4").voter


# ------------------------------------------------------------- single steps


def test_add_checks_the_joining_server_first(fake: FakeCluster, tmp_path: Path, clients: list[KVClient]) -> None:
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    fake.start("n4", "n5")
    fake.joining = {"n4": CLUSTER_ID, "n5": OTHER_CLUSTER_ID}
    with pytest.raises(InvalidRequest, match=r"joining cluster 0000000000000bad, not this one \(000000000000c1c1\)"):
        kv.add_member("n5", fake.addresses["n5"])
    with pytest.raises(InvalidRequest, match="is named 'n4', not 'n6'"):
        kv.add_member("n6", fake.addresses["n4"])
    with pytest.raises(InvalidRequest, match="n2 is already a member"):
        kv.add_member("n2", fake.addresses["n4"])
    with pytest.raises(InvalidRequest, match="already the address of member n3"):
        kv.add_member("n6", fake.addresses["n3"])
    with pytest.raises(InvalidRequest, match="not a valid server name"):
        kv.add_member("no name", fake.addresses["n4"])
    assert fake.changes == []
    after = kv.add_member("n4", fake.addresses["n4"])
    assert fake.made() == [("add", "n4")]
    assert Member("n4", fake.addresses["n4"], False, False, 40, fake.ids["n4"]) in after
    fake.joining.pop("n5")  # n5 is not waiting to join: it reports itself removed
    with pytest.raises(InvalidRequest, match="reports membership 'removed', not 'joining'"):
        kv.add_member("n5", fake.addresses["n5"])
    assert fake.made() == [("add", "n4")]


def test_a_change_answered_late_counts_once(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt is made but not answered in time; the retry is refused as a repeat,
    # and the leader's view shows the change made: that is success, not an error.
    monkeypatch.setattr(aio, "CHANGE_ATTEMPT_SECONDS", LATE_SECONDS / 5)
    fake.start("n4")
    fake.joining = {"n4": CLUSTER_ID}
    fake.late_replies = 1
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    after = kv.add_member("n4", fake.addresses["n4"])
    assert fake.changes == [("add", "n4", "ok"), ("add", "n4", "cannot add n4")]
    assert [(m.name, m.voter) for m in after] == [("n1", True), ("n2", True), ("n3", True), ("n4", False)]


def test_a_refused_change_raises_with_the_servers_reason(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.start("n4")
    fake.config["n4"] = Entry("n4", fake.addresses["n4"], False, fake.ids["n4"])
    fake.leader = "n2"
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3", "n4"))
    fake.refusals = ["another membership change is not finished yet"]
    with pytest.raises(InvalidRequest, match="another membership change is not finished yet"):
        kv.promote_member("n4")
    fake.behind["n4"] = 1
    with pytest.raises(InvalidRequest, match="n4 is 340 slots behind"):
        kv.promote_member("n4")  # one step: no waiting
    with pytest.raises(InvalidRequest, match="n1 is already a voter"):
        kv.promote_member("n1")
    with pytest.raises(InvalidRequest, match="no member named 'n9'"):
        kv.promote_member("n9")
    assert fake.made() == []
    kv.promote_member("n4")
    assert fake.made() == [("promote", "n4")]


def test_removal_refused_when_the_voters_left_that_answer_are_no_quorum(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    fake.stop("n2")
    with pytest.raises(InvalidRequest, match=r"would leave 2 voters \(n1, n2\), of which only 1 answers now \(n1\)"):
        kv.remove_member("n3")
    assert fake.changes == []
    fake.start("n2")
    kv.remove_member("n3")
    kv.remove_member("n2")
    with pytest.raises(InvalidRequest, match="n1 is the last voter"):
        kv.remove_member("n1")
    assert fake.made() == [("remove", "n3"), ("remove", "n2")]


# --------------------------------------------------------------------- sync


def test_sync_adds_before_removing_and_waits_for_the_learner(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.start("n4")
    fake.joining = {"n4": CLUSTER_ID}
    fake.behind = {"n4": 2}
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    target = fake.hostfile(tmp_path / "target.txt", "n1", "n2", "n4")
    said: list[str] = []
    after = kv.sync_members(target, timeout=30, progress=said.append)
    assert fake.changes == [
        ("add", "n4", "ok"),
        ("promote", "n4", BEHIND.format(name="n4")),
        ("promote", "n4", BEHIND.format(name="n4")),
        ("promote", "n4", "ok"),
        ("remove", "n3", "ok"),
    ]
    assert [(m.name, m.voter) for m in after] == [("n1", True), ("n2", True), ("n4", True)]
    assert said[:4] == [
        f"adding n4 ({fake.addresses['n4']}) as a learner",
        "n4 is a learner",
        "promoting learner n4 to voter",
        f"waiting: {BEHIND.format(name='n4')}",
    ]
    assert said[-3:] == ["removing n3", "n3 is removed", f"the configuration matches the hostfile: {_described(after)}"]
    # Again: nothing to do.
    said.clear()
    assert kv.sync_members(target, timeout=30, progress=said.append) == after
    assert len(fake.changes) == 5
    assert said == [f"nothing to do: already in sync: {_described(after)}"]


def _described(members: list[Member]) -> str:
    return ", ".join(f"{m.name} ({'voter' if m.voter else 'learner'}{', leader' if m.leader else ''})" for m in members)


def test_sync_removes_the_leader_last(fake: FakeCluster, tmp_path: Path, clients: list[KVClient]) -> None:
    fake.leader = "n2"
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    after = kv.sync_members(fake.hostfile(tmp_path / "target.txt", "n3"), timeout=30)
    assert fake.made() == [("remove", "n1"), ("remove", "n2")]
    assert [(m.name, m.voter, m.leader) for m in after] == [("n3", True, True)]


def test_sync_refuses_a_removal_without_a_quorum_answering(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    fake.stop("n2")
    with pytest.raises(InvalidRequest, match="only 1 answers now"):
        kv.sync_members(fake.hostfile(tmp_path / "target.txt", "n1", "n2"), timeout=30)
    assert fake.changes == []


def test_sync_times_out_leaving_a_valid_configuration(
    fake: FakeCluster, tmp_path: Path, clients: list[KVClient]
) -> None:
    fake.start("n4")
    fake.joining = {"n4": CLUSTER_ID}
    fake.behind = {"n4": 10**9}  # never catches up
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    with pytest.raises(SyncTimeout, match=r"after 0.5s \(last: learner n4 is 340 slots behind") as caught:
        kv.sync_members(fake.hostfile(tmp_path / "target.txt", "n1", "n2", "n4"), timeout=0.5)
    assert "n4 (learner)" in str(caught.value) and "n3 (voter)" in str(caught.value)
    assert fake.made() == [("add", "n4")]  # nothing removed while n4 is not a voter


def test_sync_stops_at_a_refused_change(fake: FakeCluster, tmp_path: Path, clients: list[KVClient]) -> None:
    kv = client_of(clients, fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    fake.refusals = ["the leader is shutting down"]
    with pytest.raises(InvalidRequest, match="the leader is shutting down"):
        kv.sync_members(fake.hostfile(tmp_path / "target.txt", "n1", "n2"), timeout=30)
    assert fake.made() == []


def test_next_step_refuses_what_no_step_can_reach() -> None:
    servers = parse_hostfile_text("n1 h:1\nn2 h:2\n")
    view = View((Member("n1", "h:1", True, True, 0, 1), Member("n3", "h:2", True, False, 0, 3)), 7, False, True)
    with pytest.raises(InvalidRequest, match="which is member n3's address"):
        next_step(view, servers)
    moved = parse_hostfile_text("n1 h:9\n")
    with pytest.raises(InvalidRequest, match="n1 is a member at h:1, but the hostfile lists it at h:9"):
        next_step(view, moved)
    assert next_step(view, parse_hostfile_text("n1 h:1\nn4 h:4\n")) == Step("add", "n4", "h:4")


# ---------------------------------------------------------------- command line


def test_members_json_has_exactly_the_documented_shape(
    fake: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.leader = "n2"
    fake.config["n3"].voter, fake.config["n3"].applied_index = False, 7
    hostfile = fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3")
    result = run_cli(capsys, monkeypatch, "-h", str(hostfile), "members", "--json")
    assert result.code == cli.EXIT_OK, result.err
    assert json.loads(result.out) == {
        "members": [
            {"name": "n1", "address": fake.addresses["n1"], "voter": True, "leader": False, "applied_index": 40},
            {"name": "n2", "address": fake.addresses["n2"], "voter": True, "leader": True, "applied_index": 40},
            {"name": "n3", "address": fake.addresses["n3"], "voter": False, "leader": False, "applied_index": 7},
        ]
    }
    assert [list(m) for m in json.loads(result.out)["members"]] == [list(cli.MEMBER_FIELDS)] * 3


def test_members_table(
    fake: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.config["n3"].voter = False
    hostfile = fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3")
    result = run_cli(capsys, monkeypatch, "-h", str(hostfile), "members")
    assert result.code == cli.EXIT_OK, result.err
    lines = [line.split() for line in result.out.splitlines()]
    assert lines == [
        ["NAME", "ADDRESS", "ROLE", "LEADER", "APPLIED"],
        ["n1", fake.addresses["n1"], "voter", "*", "40"],
        ["n2", fake.addresses["n2"], "voter", "40"],
        ["n3", fake.addresses["n3"], "learner", "40"],
    ]
    assert "leader: n1" in result.err


def test_members_sync_command_exits_0_then_3_on_timeout(
    fake: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.start("n4", "n5")
    fake.joining = {"n4": CLUSTER_ID, "n5": CLUSTER_ID}
    fake.behind = {"n4": 1, "n5": 10**9}
    hostfile = fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n4")
    result = run_cli(capsys, monkeypatch, "-h", str(hostfile), "members", "sync", "--timeout", "30")
    assert result.code == cli.EXIT_OK, result.err
    assert fake.made() == [("add", "n4"), ("promote", "n4"), ("remove", "n3")]
    assert "removing n3" in result.err and "the configuration matches the hostfile" in result.err
    assert [line.split()[:3] for line in result.out.splitlines()[1:]] == [
        ["n1", fake.addresses["n1"], "voter"],
        ["n2", fake.addresses["n2"], "voter"],
        ["n4", fake.addresses["n4"], "voter"],
    ]
    # n5 never catches up: the sync stops at its deadline (not the request --timeout before the command).
    fake.hostfile(hostfile, "n1", "n2", "n4", "n5")
    result = run_cli(capsys, monkeypatch, "-h", str(hostfile), "--timeout", "5", "members", "sync", "--timeout=0.5")
    assert result.code == cli.EXIT_CLUSTER
    assert "does not match the hostfile after 0.5s" in result.err and "run sync again" in result.err
    assert fake.made()[3:] == [("add", "n5")]


def test_members_add_and_remove_commands(
    fake: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.start("n4")
    fake.joining = {"n4": CLUSTER_ID}
    hostfile = str(fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2", "n3"))
    added = run_cli(capsys, monkeypatch, "-h", hostfile, "members", "add", "n4", fake.addresses["n4"])
    assert added.code == cli.EXIT_OK, added.err
    assert "n4 added as a learner" in added.err and "learner" in added.out
    again = run_cli(capsys, monkeypatch, "-h", hostfile, "members", "add", "n4", fake.addresses["n4"])
    assert again.code == cli.EXIT_USAGE and "n4 is already a member" in again.err
    unknown = run_cli(capsys, monkeypatch, "-h", hostfile, "members", "remove", "n9")
    assert unknown.code == cli.EXIT_USAGE and "no member named 'n9'" in unknown.err
    fake.stop("n2")
    short = run_cli(capsys, monkeypatch, "-h", hostfile, "members", "remove", "n3")
    assert short.code == cli.EXIT_USAGE and "a quorum needs 2" in short.err
    assert run_cli(capsys, monkeypatch, "-h", hostfile, "members", "remove", "n4").code == cli.EXIT_OK
    assert fake.made() == [("add", "n4"), ("remove", "n4")]


@pytest.mark.parametrize(
    "words",
    [
        ["members", "frob"],
        ["members", "add", "n4"],
        ["members", "remove"],
        ["members", "sync", "--timeout", "soon"],
        ["members", "sync", "--json"],
        ["members", "--json", "extra"],
    ],
)
def test_members_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, words: list[str]
) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("n1 127.0.0.1:1\n")
    result = run_cli(capsys, monkeypatch, "-h", str(hostfile), "--timeout", "0.2", *words)
    assert result.code == cli.EXIT_USAGE
    assert result.err.startswith("error: ") and "members" in result.err


def test_members_at_the_prompt(fake: FakeCluster, tmp_path: Path, clients: list[KVClient]) -> None:
    hostfile = fake.hostfile(tmp_path / "hostfile.txt", "n1", "n2")
    kv = client_of(clients, hostfile)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run_prompt(
        kv,
        stdin=io.StringIO("members --json\nmembers sync --timeout 30\n"),
        stdout=out,
        stderr=err,
        hostfile=str(hostfile),
    )
    assert code == cli.EXIT_OK, err.getvalue()
    listed, end = json.JSONDecoder().raw_decode(out.getvalue())
    assert [m["name"] for m in listed["members"]] == ["n1", "n2", "n3"]
    assert [line.split()[0] for line in out.getvalue()[end:].strip().splitlines()] == ["NAME", "n1", "n2"]
    assert fake.made() == [("remove", "n3")]
    assert [m.name for m in parse_hostfile(hostfile)] == ["n1", "n2"]


def test_help_documents_members_and_its_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli(capsys, monkeypatch, "--help")
    assert result.code == cli.EXIT_OK
    text = " ".join(result.out.split())
    assert "members [--json | sync | add | promote | remove]" in text
    assert "'members sync [--timeout SECONDS]' adds the hostfile's new servers" in text
    assert "members sync did not finish within its --timeout" in text
    assert "a removal leaving the voters that answer short of a quorum" in text
