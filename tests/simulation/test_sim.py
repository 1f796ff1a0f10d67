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

import pytest

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
# Since votes, ballots and lease reads are checked at every step
# (tests/sim/stepchecks.py) and the runs draw new adversity (slow
# acknowledgements, stalls that end together, crashes inside a vote's
# fsync, even voter counts split in halves, clocks at the lease's bound),
# the first catches are seed 0 for accept_lower_ballot (now a ballot-order
# violation: an Accepted below a promise the acceptor made), ack_before_fsync
# and votes_before_fsync (durability: a vote sent before it is durable),
# change_before_own_value, compact_above_commit, learner_votes,
# nondeterministic_session_eviction and two_changes_in_flight; then 1
# (snapshot_without_sessions), 5 (skip_reproposal), 6
# (skip_certificate_check), 16 (install_older_snapshot, unconfirmed_read),
# 43 (skip_incarnation_check) and 80 (snapshot_configuration_not_followed).
# Mistakes planted in the shipped code itself, one line each, are first
# caught at seed 0 (the replica sending its votes before their fsync, a
# durability violation; an acceptor promising by round only, a
# ballot-order one; a quorum of half the voters when they are even, an
# invariant), 6 (a leader that always believes it holds its lease, a lease
# violation), 24 (the lease measured from when the acknowledgement
# arrived), 31 (installing a snapshot forgets the values accepted above
# it, a safety violation), 40 (an acceptor accepting by round only) and 44
# (a new leader re-proposing the lowest-ballot value it was told of, a
# safety violation; only at seed 496 before).  Four of them are planted
# bugs of their own (a core subclass wrapping the step, tests/sim/bugs.py):
# lease_from_ack, lease_never_expires, half_voters_quorum (caught at seed 0
# as a leader of two voters sending accepts with a ballot it never made
# durable, elected by its own promise alone) and snapshot_forgets_accepted.
# Since a new cluster spends one slot on raising its cluster version right
# after its first election, every run draws differently again.
# snapshot_forgets_accepted then went uncaught in seeds 0-599 (it had been
# caught in only 2 of seeds 0-599, at 31 and 74): it needs the forgotten
# vote to decide a later election.  The step checks now also hold every
# promise to the votes its disk sent, which catches the forgetting itself,
# at seed 9 (durability).  The first catches are now seed 0 for
# ack_before_fsync, votes_before_fsync, change_before_own_value,
# compact_above_commit, half_voters_quorum (a lease violation),
# learner_votes, skip_certificate_check, skip_reproposal,
# snapshot_without_sessions and two_changes_in_flight; then 1
# (accept_lower_ballot, nondeterministic_session_eviction), 3
# (skip_incarnation_check), 9 (install_older_snapshot, lease_never_expires,
# snapshot_forgets_accepted), 11 (unconfirmed_read), 16 (lease_from_ack) and
# 153 (snapshot_configuration_not_followed, the closest to the budget; 80
# before).
BUG_BUDGET = 200

# Planted bugs that must be caught by the rule they break, not by a
# consequence seen later.
CAUGHT_BY = {
    "votes_before_fsync": {"durability"},
    "ack_before_fsync": {"durability"},
    "lease_from_ack": {"lease"},
    "lease_never_expires": {"lease"},
}

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
    if bug in CAUGHT_BY:
        assert violation.kind in CAUGHT_BY[bug], first.summary()
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
