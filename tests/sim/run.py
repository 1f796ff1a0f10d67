"""One simulated run (``Simulation``), and runs of many seeds (``run_seed``, ``run_many``).

The simulation owns the one random source, simulated time and the event
queue; its parts (hosts, clients, network, nemesis, disk losses,
membership changes and checks) schedule their work on it.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import multiprocessing
import random
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from paxos.common import limits
from paxos.consensus.core import Config, InvariantError
from paxos.consensus.membership import ConfigMember, Membership
from paxos.consensus.planted import PlantedBug
from tests.sim.bugs import SKIPPED_INCARNATION, Bug, HostBug, names, planted
from tests.sim.checks import CONVERGENCE_POLL_US, LIVENESS_US, Checks
from tests.sim.clients import Client, ClientOp
from tests.sim.faults.disks import DiskLoss
from tests.sim.faults.membership import Reconfiguration
from tests.sim.faults.nemesis import Nemesis
from tests.sim.forger import Forger
from tests.sim.host import Host
from tests.sim.network import Network
from tests.sim.profile import Profile
from tests.sim.stepchecks import StepChecks
from tests.sim.trace import Event, RunResult, SimulationStop, Violation
from tests.sim.units import MS, SECOND, sim_address, sim_name

DEFAULT_NODES = (3, 5, 7)
DEFAULT_FAULT_SECONDS = 20.0


class Simulation:
    """One seed's run: a cluster, its clients and its faults, from one random source."""

    def __init__(
        self,
        seed: int,
        nodes: Sequence[int] = DEFAULT_NODES,
        bugs: Iterable[str | Bug] = (),
        fault_seconds: float = DEFAULT_FAULT_SECONDS,
        verbose: bool = False,
    ) -> None:
        if not nodes or min(nodes) < 3:
            raise ValueError(f"cluster sizes must be 3 or more (a cut needs two sides and a quorum), got {nodes}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = self.rng.choice(list(nodes))
        self.planted = planted(bugs)
        self.bugs = names(self.planted)
        core_bugs = frozenset(bug for bug in self.planted if isinstance(bug, PlantedBug))
        self.config = Config(planted_bugs=core_bugs, check_invariants=True)
        self.skip_incarnation_check = HostBug.SKIP_INCARNATION_CHECK in self.planted
        self.incarnations_made = 0
        self.profile = Profile.draw(self.rng)
        self.verbose = verbose
        self.now = 0
        self.queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.fault_end = round(fault_seconds * SECOND)
        self.healed = False
        self.liveness_deadline = self.fault_end + LIVENESS_US
        self.finished = False
        self.violations: list[Violation] = []
        self.trace: list[Event] = []
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "events",
                "messages",
                "dropped",
                "elections",
                "crashes",
                "partitions",
                "pauses",
                "refused",
                "snapshots",
                "snapshot_installs",
                "disks_lost",
                "founding_refused",
                "changes",
                "changes_refused",
                "forged",
                "forged_refused",
                "ops_ok",
                "ops_unknown",
                "ops_failed",
                "sessions_registered",
                "sessions_expired",
            ),
            0,
        )
        self.network = Network(self)
        self.checks = Checks(self)
        self.steps = StepChecks(self)
        self.nemesis = Nemesis(self)
        self.disks = DiskLoss(self)
        self.membership = Reconfiguration(self)
        # Servers 0..n-1 found the cluster; the spares wait to be added.
        self.size = self.n + self.profile.spares
        # As a server founding the cluster makes it: each member at its hostfile address.
        self.bootstrap = Membership.of(ConfigMember(i, sim_name(i), sim_address(i)) for i in range(self.n))
        self.hosts = [Host(self, i, self.profile.tick_us(self.rng)) for i in range(self.size)]
        self.clients = [Client(self, i) for i in range(self.profile.clients)]
        self.forger = Forger(self)

    # -------------------------------------------------------------- events

    def new_incarnation(self) -> int:
        """A new data dir's incarnation: distinct, and reproducible from the seed."""
        self.incarnations_made += 1
        return SKIPPED_INCARNATION + self.incarnations_made

    def at(self, when: int, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, fn, args))

    def log(self, node: int, kind: str, text: str, key: str | None = None, slot: int | None = None) -> None:
        self.trace.append(Event(self.now, node, kind, text, key, slot))

    def log_client(self, client: Client, text: str, op: ClientOp) -> None:
        command = f"{client.name}#{op.seq}" if op.seq else None
        self.trace.append(Event(self.now, -1, "client", f"{client.name} {text}", op.key, command=command))

    def violation(
        self,
        kind: str,
        message: str,
        key: str | None = None,
        slot: int | None = None,
        window: tuple[int, int] | None = None,
        commands: frozenset[str] = frozenset(),
    ) -> None:
        self.violations.append(Violation(kind, self.now, message, key, slot, window, commands))
        self.log(-1, "check", f"VIOLATION {kind}: {message}", key=key, slot=slot)
        raise SimulationStop(message)

    def run(self) -> RunResult:
        for host in self.hosts[: self.n]:
            host.start()
        for client in self.clients:
            self.at(self.rng.randrange(self.profile.think_us), client.next_op)
        self.at(self.rng.randrange(self.profile.fault_gap_us), self.nemesis.act)
        self.disks.start()
        self.at(self.fault_end, self.heal)
        queue = self.queue
        pop = heapq.heappop
        events = 0
        # The bound is a constant of the code every replica runs; a run sets
        # it for all of its replicas alike, and puts it back afterwards.
        bound, limits.MAX_CLIENT_SESSIONS = limits.MAX_CLIENT_SESSIONS, self.profile.max_sessions
        # The servers' log lines (refusals, above all) say nothing the trace
        # does not, and a run of many seeds would print thousands of them.
        server_log = logging.getLogger("paxos.server")
        was_disabled, server_log.disabled = server_log.disabled, True
        try:
            while queue and not self.finished:
                when, _, fn, args = pop(queue)
                self.now = when
                fn(*args)
                events += 1
            self.stats["events"] = events
            self.checks.final_checks()
        except SimulationStop:
            self.stats["events"] = events
        except InvariantError:  # the core caught itself in a state no step may leave
            self.stats["events"] = events
            self.violations.append(Violation("invariant", self.now, traceback.format_exc(limit=8).strip()))
        except Exception:  # a crash of the core or the host is a finding too
            self.stats["events"] = events
            self.violations.append(Violation("exception", self.now, traceback.format_exc(limit=8).strip()))
        finally:
            limits.MAX_CLIENT_SESSIONS = bound
            server_log.disabled = was_disabled
        chosen = self.checks.chosen
        self.stats["slots"] = max(chosen, default=0)
        self.stats["lease_reads"] = self.steps.lease_reads
        self.stats["sim_us"] = self.now
        return RunResult(self.seed, self.n, self.bugs, self.violations, self.stats, self.digest(), self.trace, chosen)

    def digest(self) -> str:
        checks = self.checks
        h = hashlib.sha256()
        for slot in sorted(checks.chosen):
            h.update(repr((slot, checks.chosen[slot])).encode())
        for op in checks.history:
            h.update(repr(op).encode())
        for op, seq in checks.unknown:
            h.update(repr((op, seq)).encode())
        h.update(repr(sorted(self.stats.items())).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------ shared

    def fsync_latency(self) -> int:
        rng = self.rng
        low, high = self.profile.fsync_us
        took = rng.randint(low, high)
        if rng.random() < self.profile.fsync_stall:
            took += rng.randint(20 * MS, 100 * MS)
        return took

    def leader(self) -> Host | None:
        """The up leader of the highest ballot, if any."""
        leaders = [h for h in self.hosts if h.up and h.replica is not None and h.replica.core.is_leader()]
        return max(leaders, key=lambda h: h.core.ballot if h.core else 0) if leaders else None

    # ------------------------------------------------------------ liveness

    def heal(self) -> None:
        """The fault phase ends: the network is whole, faults stop, every node is up; liveness is checked."""
        self.healed = True
        self.network.heal()
        self.log(-1, "fault", "heal: network whole, faults stop, every node up")
        for host in self.hosts:
            if host.active and not host.up and not self.disks.kept_down(host.id):
                host.start()
        for client in self.clients:
            client.final_ops = 2
            if client.op is not None:
                client.op.final = True
                client.op.deadline = max(client.op.deadline, self.liveness_deadline)
        self.at(self.now + CONVERGENCE_POLL_US, self.checks.poll_convergence)


# ------------------------------------------------------------------- runners


def run_seed(
    seed: int,
    nodes: Sequence[int] = DEFAULT_NODES,
    bugs: Iterable[str | Bug] = (),
    fault_seconds: float = DEFAULT_FAULT_SECONDS,
    verbose: bool = False,
    keep_trace: bool = True,
) -> RunResult:
    result = Simulation(seed, nodes, bugs, fault_seconds, verbose).run()
    if not keep_trace:
        result.trace, result.chosen = [], {}
    return result


def _run_quiet(args: tuple[int, tuple[int, ...], tuple[str, ...], float]) -> RunResult:
    seed, nodes, bugs, fault_seconds = args
    return run_seed(seed, nodes, bugs, fault_seconds, keep_trace=False)


def run_many(
    seeds: Iterable[int],
    nodes: Sequence[int] = DEFAULT_NODES,
    bugs: Iterable[str | Bug] = (),
    fault_seconds: float = DEFAULT_FAULT_SECONDS,
    jobs: int = 1,
    stop_at_first_failure: bool = False,
    progress: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run seeds in order (in ``jobs`` processes); results in seed order."""
    named = names(bugs)
    work = [(seed, tuple(nodes), named, fault_seconds) for seed in seeds]
    results: list[RunResult] = []
    if jobs <= 1:
        for item in work:
            result = _run_quiet(item)
            results.append(result)
            if progress:
                progress(result)
            if stop_at_first_failure and not result.ok:
                break
        return results
    # Fresh worker processes, not forks: a fork inherits whatever the caller
    # runs (under pytest, gRPC's threads from earlier tests, which slowed
    # forked workers down by orders of magnitude).
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Ordered map in chunks: a failure stops the run soon after it is seen.
        chunk = jobs * 4
        for i in range(0, len(work), chunk):
            for result in pool.map(_run_quiet, work[i : i + chunk]):
                results.append(result)
                if progress:
                    progress(result)
            if stop_at_first_failure and any(not r.ok for r in results):
                break
    if stop_at_first_failure:
        first_bad = next((i for i, r in enumerate(results) if not r.ok), None)
        if first_bad is not None:
            results = results[: first_bad + 1]
    return results
