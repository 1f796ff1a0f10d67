"""Whole-cluster deterministic simulation (``tests/sim/``).

The seed sweep is sized for CI (a few tens of CPU seconds); run a long one
with ``PAXOSKV_SIM_SEEDS=10000 python -m pytest tests/simulation/test_sim.py -k sweep``
or directly with ``python -m tests.sim --seeds 10000``.  A failing seed is
replayed, with its timeline, by ``python -m tests.sim --seed N``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from paxos.consensus.core import Node
from paxos.consensus.membership import Membership
from paxos.consensus.messages import HeartbeatAck, Slot
from paxos.consensus.quorum import MajorityConfig
from paxos.consensus.state import LeaderState
from tests import sim
from tests.harness import PROJECT

SEEDS = int(os.environ.get("PAXOSKV_SIM_SEEDS", "200"))
START = int(os.environ.get("PAXOSKV_SIM_START", "0"))
JOBS = int(os.environ.get("PAXOSKV_SIM_JOBS", str(min(2, os.cpu_count() or 1))))

# Seeds that fail with no bug planted because of a known, reported bug in the
# core, with the diagnosis; they are skipped by the sweep until it is fixed.
KNOWN_FAILURES: dict[int, str] = {}

# Every planted bug must be caught within this many seeds (0, 1, 2, ...).
# With the default 20 s fault phase (forged messages included) the first
# catches were at seed 12 (accept_lower_ballot), 28 (ack_before_fsync), 0
# (skip_reproposal) and 2 (unconfirmed_read); over seeds 0-199 they were
# caught by 15, 11, 157 and 32 seeds respectively.  With snapshots in every
# seed, the snapshot bugs were first caught at seed 1 (compact_above_commit,
# a safety violation), 9 (install_older_snapshot, stopped by the core's
# host-contract check) and 3 (snapshot_without_sessions: a node that
# restarted from such a snapshot ends with a client-session table unlike the
# log's, so a retried write would apply twice; caught in 15 of seeds 0-199).
# With random membership changes in most seeds, the membership bugs were
# first caught at seed 0 (two_changes_in_flight), 5 (change_before_own_value)
# and 18 (learner_votes, the rarest: 7 of seeds 0-199), each a safety
# violation.  Since clients register their sessions through the log,
# nondeterministic_session_eviction (a replica evicting a session of its own
# choosing) is caught in 19 of seeds 0-19: a final member's session table or
# data unlike the log's (divergence), or an acknowledged write that the log
# itself refused as expired (lost-write).  A server that lost its disk and
# founds anew without the incarnation check (skip_incarnation_check) was
# first caught at seed 14 (in 5 of seeds 0-199) while every loss struck a
# voter drawn at random; since half the losses are staged as an
# acknowledged write's worst case (a follower stalls, another loses its
# disk, the leader crashes), at seed 1, a safety violation, in 11 of seeds
# 0-199.
# Since the core checks its invariants after every step in the simulation,
# four of its bugs are stopped by one before the run's checks see their
# damage (GUARDED_BUGS): compact_above_commit at seed 0 (a leader's slot in
# flight no longer accepted), learner_votes at seed 0 (a configuration with
# a learner counts it towards a quorum), two_changes_in_flight at seed 0 (a
# slot in flight above an unfinished change) and change_before_own_value at
# seed 16 (a change proposed while the pipeline is full of re-proposals).
# The others' first catches are now seeds 8 (accept_lower_ballot), 26
# (ack_before_fsync), 0 (skip_reproposal, snapshot_without_sessions and
# nondeterministic_session_eviction), 1 (skip_incarnation_check), 9
# (install_older_snapshot) and 20 (unconfirmed_read).
# Since peer messages travel in wire form through the server's peer ingress
# and forgeries come on streams opened with a member's certificate (the runs
# draw differently), the first catches are seeds 7 (accept_lower_ballot, now
# stopped by the invariant that a leader's role and the leader it names
# agree), 26 (ack_before_fsync), 13 (change_before_own_value, a safety
# violation), 9 (install_older_snapshot), 1 (skip_incarnation_check) and 0
# for the others.  The ingress's planted bugs: skip_certificate_check at
# seed 0 (a forgery taken: a member's certificate carrying another member's
# message; in 90 of seeds 0-199), and snapshot_configuration_not_followed at
# seed 0 (liveness: a leader that learned of a learner's addition only from
# a snapshot never sends to it; only in seeds 0 and 12 of 0-199).
BUG_BUDGET = 200

# What a run reports when one of its checks (not a crash) found the bug.
# A refusal is a server refusing a message from an honest member as
# impossible: its own checks caught the inconsistency a bug left behind.
# A forgery is a forged message that a server took.
# Durability, ballot order and lease reads are checked at every step
# (tests/sim/stepchecks.py).
CHECK_KINDS = {
    "safety",
    "lost-write",
    "divergence",
    "linearizability",
    "liveness",
    "refusal",
    "forgery",
    "durability",
    "ballot-order",
    "lease",
}
# Planted bugs that an invariant of the product stops before any check
# could see their damage: the server stops with this error rather than roll
# its state back (an exception), or the core finds itself in a state no step
# may leave (an invariant, paxos/consensus/core.py).
GUARDED_BUGS = {
    "accept_lower_ballot": "disagree on whether this server leads",
    "install_older_snapshot": "HostContractError: install_snapshot(",
    "compact_above_commit": "in flight is not what this leader accepted",
    "learner_votes": "count towards a quorum",
    "two_changes_in_flight": "in flight above the unfinished membership change",
    "change_before_own_value": "of them fresh",
}


def _report(results: list[sim.RunResult]) -> str:
    return "\n".join(f"{r.summary()}\n  replay: python -m tests.sim --seed {r.seed}" for r in results)


@pytest.mark.timeout(max(300, SEEDS * 3))
def test_sweep_of_seeds_across_3_5_7_nodes_passes_with_no_bug_planted() -> None:
    results = sim.run_many(range(START, START + SEEDS), jobs=JOBS)
    failures = [r for r in results if not r.ok and r.seed not in KNOWN_FAILURES]
    assert not failures, _report(failures)
    assert len(results) == SEEDS
    if SEEDS >= 20:
        assert {r.nodes for r in results} == {3, 5, 7}
        # The runs did real work under faults, not just idle.
        assert sum(r.stats["ops_ok"] for r in results) > 100 * SEEDS
        assert sum(r.stats["elections"] for r in results) > 2 * SEEDS


@pytest.mark.parametrize("bug", sorted(sim.ALL_BUGS))
def test_planted_bug_is_caught_within_the_seed_budget(bug: str) -> None:
    results = sim.run_many(range(BUG_BUDGET), bugs=[bug], jobs=JOBS, stop_at_first_failure=True)
    caught = [r for r in results if not r.ok]
    assert caught, f"planted bug {bug} survived {BUG_BUDGET} seeds"
    first = caught[0]
    violation = first.violations[0]
    guard = GUARDED_BUGS.get(bug)
    if guard is not None and violation.kind in ("exception", "invariant"):
        assert guard in violation.message, first.summary()
    else:
        assert violation.kind in CHECK_KINDS, first.summary()


def test_same_seed_gives_the_identical_event_trace() -> None:
    first = sim.run_seed(7, verbose=True)
    again = sim.run_seed(7, verbose=True)
    assert len(first.trace) > 1000  # messages, disk, faults, roles, clients
    assert first.trace == again.trace
    assert first.digest == again.digest
    assert first.stats == again.stats
    # A quiet run makes the same random draws, so it ends the same way.
    assert sim.run_seed(7, keep_trace=False).digest == first.digest


def test_replay_does_not_depend_on_the_string_hash_seed() -> None:
    def digest_line(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-m", "tests.sim", "--seed", "7"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return next(line for line in out.splitlines() if "digest" in line)

    assert digest_line("1") == digest_line("2")


def test_a_failing_seed_replays_with_its_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    results = sim.run_many(range(BUG_BUDGET), bugs=["skip_reproposal"], stop_at_first_failure=True)
    failing = next(r for r in results if not r.ok)
    exit_code = sim.main(["--seed", str(failing.seed), "--bug", "skip_reproposal"])
    out = capsys.readouterr().out
    assert exit_code == 1
    assert "VIOLATION" in out
    assert f"seed {failing.seed}: FAIL" in out
    assert " fault " in out or " role " in out  # the timeline around it


def test_many_seeds_print_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = sim.main(["--seeds", "3", "--start", "11", "--nodes", "3", "--jobs", "1", "--fault-seconds", "5"])
    out = capsys.readouterr().out
    assert exit_code == 0
    assert "3 seeds run (3 x 3 nodes)" in out
    assert "no failures" in out


def test_unknown_bug_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown planted bugs"):
        sim.Simulation(1, bugs=["no_such_bug"])


# Classic Multi-Paxos mistakes made in the shipped code, planted here in
# this process only (the runs below use one job), each around a step of
# the core so that the step itself is the code that ships.  The step
# checks must catch each within the seed budget, by the rule it breaks.


def _lease_from_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read lease measured from when a quorum's acknowledgement arrived, not from when the heartbeat left."""
    on_ack = Node._on_heartbeat_ack

    def late(self: Node, msg: HeartbeatAck) -> None:
        lead = self._lead
        before = lead.lease_until if lead is not None else None
        on_ack(self, msg)
        if lead is not None and lead.lease_until != before:
            lead.lease_until = max(lead.lease_until, self.now + self._lease_ticks)

    monkeypatch.setattr(Node, "_on_heartbeat_ack", late)


def _lease_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that always believes it holds its read lease."""

    def always(self: Node, lead: LeaderState) -> bool:
        return True

    monkeypatch.setattr(Node, "_holds_lease", always)


def _half_is_a_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quorums counted wrong for even numbers of voters only: half of them decide."""
    init = MajorityConfig.__init__

    def halves(self: MajorityConfig, voters: object) -> None:
        init(self, voters)  # type: ignore[arg-type]
        self.quorum_size = (len(self.voters) + 1) // 2

    monkeypatch.setattr(MajorityConfig, "__init__", halves)


def _snapshot_forgets_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installing a snapshot forgets the values accepted above its index too."""
    install = Node.install_snapshot

    def forgetful(self: Node, index: Slot, membership: Membership | None = None) -> None:
        self.accepted.clear()
        install(self, index, membership)

    monkeypatch.setattr(Node, "install_snapshot", forgetful)


MUTANTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], set[str]]] = {
    "lease_from_ack": (_lease_from_ack, {"lease", "linearizability"}),
    "lease_for_ever": (_lease_for_ever, {"lease", "linearizability"}),
    "half_is_a_quorum": (_half_is_a_quorum, CHECK_KINDS | {"invariant"}),
    "snapshot_forgets_accepted": (_snapshot_forgets_accepted, CHECK_KINDS | {"invariant"}),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_step_checks_catch_a_classic_mistake_within_the_seed_budget(
    mutant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant, kinds = MUTANTS[mutant]
    plant(monkeypatch)
    results = sim.run_many(range(BUG_BUDGET), jobs=1, stop_at_first_failure=True)
    caught = [r for r in results if not r.ok]
    assert caught, f"{mutant} survived {BUG_BUDGET} seeds"
    assert caught[0].violations[0].kind in kinds, caught[0].summary()


def test_a_vote_sent_before_its_fsync_is_caught_as_it_leaves() -> None:
    (result,) = sim.run_many([0], bugs=["votes_before_fsync"], jobs=1)
    violation = result.violations[0]
    assert violation.kind == "durability", result.summary()
    assert "before it is durable" in violation.message
