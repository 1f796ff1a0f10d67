"""Cluster versions: the gate table, the raise as the state machine applies it, the reports and the leader's raise.

The leader raises the cluster version through the log once every member,
learners included, reported recently that it runs the new version
(paxos/clusterversion.py); every replica applies the raise at the same slot,
and a raise beyond what a release runs stops it there, with nothing of that
slot applied.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from paxos.__main__ import EXIT_USAGE, build_parser
from paxos.__main__ import main as server_main
from paxos.clusterversion import VersionReports
from paxos.common import limits, versions
from paxos.common.versions import BASE_CLUSTER_VERSION, MAX_CLUSTER_VERSION, Feature, gate_error
from paxos.consensus.messages import (
    Accept,
    Accepted,
    Ballot,
    DurableState,
    HeartbeatAck,
    Message,
    NodeId,
    PreVote,
    PreVoteReply,
    Promise,
    Slot,
)
from paxos.kv import logcommand
from paxos.kv.statemachine import ClusterVersionTooNew, StateMachine, VersionRaised
from paxos.replica import FetchedSnapshot, Observer, Replica
from paxos.server.codec import PeerCodec, pack
from paxos.storage import snapshot
from paxos.storage.snapshot import SnapshotMember
from protos import log_pb2, snapshot_pb2
from protos import peer_pb2 as pb
from tests.harness.corenet import ELECTION, NO_LEASE
from tests.harness.logcommands import Applier, cmd, register
from tests.harness.replicafakes import MemoryStorage

# ------------------------------------------------------------ the gates


def test_a_feature_is_gated_below_the_version_it_needs_and_the_error_names_it() -> None:
    for feature in Feature:
        assert gate_error(feature, feature.needs) is None
        assert gate_error(feature, feature.needs + 1) is None
        error = gate_error(feature, feature.needs - 1)
        assert error is not None
        assert f"cluster version {feature.needs}" in error
        assert f"runs {feature.needs - 1}" in error
        assert versions.release_for(feature.needs) in error
        assert "\n" not in error


def test_a_member_that_reports_nothing_runs_the_base_version() -> None:
    assert versions.reported(0) == BASE_CLUSTER_VERSION
    assert versions.reported(2) == 2


def test_the_too_new_error_names_the_version_and_what_to_start() -> None:
    error = versions.too_new_error(MAX_CLUSTER_VERSION + 1)
    assert f"version {MAX_CLUSTER_VERSION + 1}" in error and f"at most {MAX_CLUSTER_VERSION}" in error
    assert "start release" in error


# ------------------------------------------------------- the state machine


def raise_to(version: int, proposer: int = 7) -> bytes:
    return logcommand.raise_cluster_version(version, proposer)


def test_a_raise_moves_the_cluster_version_and_only_up() -> None:
    apply = Applier()
    assert apply.sm.cluster_version == BASE_CLUSTER_VERSION
    assert apply(raise_to(2, proposer=3)) == [VersionRaised(1, 2, 3)]
    assert apply.sm.cluster_version == 2
    # At or below the current version: nothing changes, nothing is reported
    # (two leaders may each have proposed one).
    assert apply(raise_to(2)) == []
    assert apply(raise_to(1)) == []
    assert apply.sm.cluster_version == 2
    assert apply.sm.unreadable_commands == 0


def test_a_raise_beyond_this_release_stops_before_anything_of_its_slot_applies() -> None:
    apply = Applier()
    apply(register())
    before = apply.sm.applied_index
    with pytest.raises(ClusterVersionTooNew) as raised:
        # A write batched ahead of the raise in the same slot must not apply either.
        apply(cmd(1, 0, set=("k", "v")), raise_to(MAX_CLUSTER_VERSION + 1))
    assert raised.value.slot == before + 1 and raised.value.version == MAX_CLUSTER_VERSION + 1
    assert f"version {MAX_CLUSTER_VERSION + 1}" in str(raised.value)
    assert apply.sm.applied_index == before
    assert apply.sm.data == {}
    assert apply.sm.cluster_version == BASE_CLUSTER_VERSION


def test_replicas_applying_the_same_log_agree_on_the_version_at_every_slot() -> None:
    rng = random.Random(5)
    log: list[tuple[bytes, ...]] = [(register(nonce=n),) for n in range(1, 4)]
    for seq in range(40):
        batch = [cmd(1 + seq % 3, seq, set=(f"k{seq % 7}", str(seq)))]
        if rng.random() < 0.2:
            batch.insert(rng.randrange(2), raise_to(rng.choice((1, 2))))
        log.append(tuple(batch))
    first, second = StateMachine(), StateMachine()
    for slot, value in enumerate(log, start=1):
        first.apply(slot, value)
        second.apply(slot, value)
        assert first.cluster_version == second.cluster_version
    assert first.cluster_version == 2 and first.data == second.data


MEMBERS = [SnapshotMember(1, "a", "127.0.0.1:1"), SnapshotMember(2, "b", "127.0.0.1:2")]


def test_a_snapshot_keeps_the_cluster_version(tmp_path: Path) -> None:
    apply = Applier()
    apply(register())
    apply(raise_to(2))
    apply(cmd(1, 0, set=("k", "v")))
    frozen = apply.sm.freeze()
    assert frozen.cluster_version == 2
    path = snapshot.write_snapshot(tmp_path, frozen, cluster_id=7, members=MEMBERS)
    _, restored = snapshot.load(path)
    assert restored.cluster_version == 2
    # The rest of the log applies the same after it.
    assert restored.apply(4, (raise_to(2),)) == apply(raise_to(2)) == []


def test_a_snapshot_from_before_cluster_versions_reads_as_the_base_version(tmp_path: Path) -> None:
    apply = Applier()
    apply(register())
    path = snapshot.write_snapshot(tmp_path, apply.sm.freeze(), cluster_id=7, members=MEMBERS)
    header = snapshot_pb2.SnapshotHeader()
    header.CopyFrom(snapshot.header_for(apply.sm.freeze(), 7, MEMBERS))
    header.ClearField("cluster_version")  # as release 0.1.0 wrote it
    assert StateMachine.restore(header, []).cluster_version == BASE_CLUSTER_VERSION
    assert snapshot.load(path)[1].cluster_version == BASE_CLUSTER_VERSION


def test_a_snapshot_of_a_newer_cluster_version_is_not_restored() -> None:
    header = snapshot.header_for(StateMachine().freeze(), 7, MEMBERS)
    header.cluster_version = MAX_CLUSTER_VERSION + 1
    with pytest.raises(ClusterVersionTooNew):
        StateMachine.restore(header, [])


# ------------------------------------------------------------ the reports


def test_the_raise_waits_for_a_recent_report_from_every_member() -> None:
    reports = VersionReports(window=1.0)
    members = [0, 1, 2, 3]  # 3 may be a learner: it applies the log too
    reports.heard(1, 2, now=10.0)
    reports.heard(2, 2, now=10.0)
    assert reports.raise_to(members, 0, 2, current=1, now=10.5) is None, "member 3 never reported"
    reports.heard(3, 2, now=10.2)
    assert reports.raise_to(members, 0, 2, current=1, now=10.5) == 2
    assert reports.raise_to(members, 0, 2, current=1, now=11.1) is None, "1 and 2 reported too long ago"
    assert reports.raise_to(members, 0, 2, current=2, now=10.5) is None, "nothing to raise"
    assert reports.raise_to(members, 0, 1, current=1, now=10.5) is None, "the leader itself runs only 1"
    reports.heard(2, 0, now=10.4)  # replaced by a release from before cluster versions
    assert reports.raise_to(members, 0, 2, current=1, now=10.5) is None
    assert reports.raise_to([0, 1, 3], 0, 2, current=1, now=10.5) == 2, "2 left the configuration"


# ---------------------------------------------------- the leader's raise


class Clock:
    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> float:
        return (self.ticks + 0.5) * limits.TICK_SECONDS


class Recording(Observer):
    """A transport and an observer that keep what was sent and which versions applied."""

    def __init__(self) -> None:
        self.sent: list[tuple[NodeId, Message]] = []
        self.applied: list[tuple[Slot, int]] = []

    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        self.sent.extend(messages)

    def fetch_snapshot(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        done(None)

    def cluster_version_applied(self, slot: Slot, version: int) -> None:
        self.applied.append((slot, version))

    def raises_proposed(self) -> dict[Slot, int]:
        """Each slot the leader's accepts offered a raise in, with its version."""
        found = {}
        for _, msg in self.sent:
            if isinstance(msg, Accept):
                for raw in msg.value:
                    command = log_pb2.LogCommand.FromString(raw)
                    if command.WhichOneof("kind") == "raise_cluster_version":
                        found[msg.slot] = command.raise_cluster_version.version
        return found


class Leader:
    """Member 0 of [0, 1, 2] elected leader, on a clock the test moves."""

    def __init__(self, max_cluster_version: int = MAX_CLUSTER_VERSION, member_report: int = 0) -> None:
        self.clock = Clock()
        self.out = Recording()
        self.replica = Replica(
            0,
            [0, 1, 2],
            DurableState(),
            MemoryStorage(),
            self.out,
            self.clock,
            lambda: None,
            rng=random.Random(0),
            config=NO_LEASE,
            observer=self.out,
            max_cluster_version=max_cluster_version,
        )
        for _ in range(4 * ELECTION):
            self.tick()
            prevotes = [msg for _, msg in self.out.sent if isinstance(msg, PreVote)]
            if prevotes:
                break
        self.ballot = prevotes[0].ballot
        self.receive(PreVoteReply(1, self.ballot, True), member_report)
        self.receive(Promise(1, self.ballot, 0, ()), member_report)
        assert self.replica.core.is_leader()

    def receive(self, msg: Message, max_cluster_version: int) -> None:
        self.replica.receive(msg, 1, max_cluster_version)
        self.replica.drive()

    def tick(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            self.clock.ticks += 1
            self.replica.tick()
            self.replica.drive()

    def report(self, member: NodeId, max_cluster_version: int) -> None:
        """``member`` acknowledges a heartbeat, saying what it runs."""
        self.receive(HeartbeatAck(member, self.ballot, 0, 0), max_cluster_version)


def test_the_leader_raises_once_every_member_reported_and_only_one_raise_at_a_time() -> None:
    leader = Leader(member_report=2)
    leader.tick(2)
    assert leader.out.raises_proposed() == {}, "member 2 has not reported: the raise must wait"
    leader.report(2, 2)
    leader.tick()
    [(slot, version)] = leader.out.raises_proposed().items()
    assert version == 2
    # While it is pending, however long the members keep reporting, no second one.
    for _ in range(10):
        leader.report(1, 2)
        leader.report(2, 2)
        leader.tick()
    assert leader.out.raises_proposed() == {slot: 2}
    assert leader.replica.store.cluster_version == BASE_CLUSTER_VERSION, "applied before it was chosen"
    leader.receive(Accepted(1, leader.ballot, slot), 2)
    assert leader.replica.store.cluster_version == 2
    assert leader.out.applied == [(slot, 2)]
    leader.report(2, 2)
    leader.tick(3)
    assert leader.out.raises_proposed() == {slot: 2}, "raised again once it applied"


def test_the_leader_does_not_raise_on_a_stale_report() -> None:
    leader = Leader(member_report=2)
    leader.report(2, 2)
    quiet = int(limits.VERSION_REPORT_SECONDS / limits.TICK_SECONDS) + 2
    for _ in range(quiet):
        leader.report(1, 2)  # member 1 keeps the leader in office; member 2 says nothing more
        leader.clock.ticks += 1
    leader.tick()
    assert leader.replica.core.is_leader()
    assert leader.out.raises_proposed() == {}
    leader.report(2, 2)  # heard again: now it may
    leader.tick()
    assert list(leader.out.raises_proposed().values()) == [2]


@pytest.mark.parametrize("member_report", [0, 1], ids=["release-before-versions", "max-1"])
def test_the_leader_does_not_raise_while_a_member_runs_only_the_base_version(member_report: int) -> None:
    leader = Leader(member_report=2)
    leader.report(2, member_report)
    leader.tick(3)
    assert leader.replica.core.is_leader()
    assert leader.out.raises_proposed() == {}


def test_a_leader_held_back_by_its_own_flag_does_not_raise() -> None:
    leader = Leader(max_cluster_version=1, member_report=2)
    leader.report(2, 2)
    leader.tick(3)
    assert leader.out.raises_proposed() == {}


# ------------------------------------------------------------ the wire


def test_every_envelope_carries_the_senders_max_cluster_version() -> None:
    heartbeat = HeartbeatAck(1, Ballot(1, 1), 3, 4)
    sender = PeerCodec(9, 1, [2], incarnation=5)
    held_back = PeerCodec(9, 1, [2], incarnation=5, max_cluster_version=1)
    receiver = PeerCodec(9, 2, [1], incarnation=6)
    wire = pb.PeerMessage.FromString(sender.encode(heartbeat, 2).SerializeToString())
    assert wire.max_cluster_version == MAX_CLUSTER_VERSION
    assert receiver.decode(wire) == heartbeat
    assert held_back.encode(heartbeat, 2).max_cluster_version == 1
    packed = pack([sender.encode(heartbeat, 2), sender.encode(heartbeat, 2)])
    assert packed.max_cluster_version == MAX_CLUSTER_VERSION
    assert all(inner.max_cluster_version == MAX_CLUSTER_VERSION for inner in packed.packed)


def test_an_envelope_from_before_cluster_versions_reads_as_the_base_version() -> None:
    heartbeat = HeartbeatAck(1, Ballot(1, 1), 3, 4)
    old = PeerCodec(9, 1, [2], incarnation=5).encode(heartbeat, 2)
    old.ClearField("max_cluster_version")  # what release 0.1.0 sends
    wire = pb.PeerMessage.FromString(old.SerializeToString())
    assert PeerCodec(9, 2, [1], incarnation=6).decode(wire) == heartbeat
    assert wire.max_cluster_version == 0 and versions.reported(wire.max_cluster_version) == BASE_CLUSTER_VERSION


# ------------------------------------------------------------ the flag


@pytest.mark.parametrize("value", ["0", str(MAX_CLUSTER_VERSION + 1)])
def test_the_server_refuses_a_max_cluster_version_it_cannot_run(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("a 127.0.0.1:1\n")
    assert server_main(["-h", str(hostfile), "-n", "a", "--max-cluster-version", value]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert f"--max-cluster-version must be from {BASE_CLUSTER_VERSION} to {MAX_CLUSTER_VERSION}" in error
    assert not (tmp_path / "data").exists()


def test_the_servers_help_names_the_flag() -> None:
    assert "--max-cluster-version" in build_parser().format_help()
