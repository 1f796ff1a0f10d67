"""Jepsen-style fault injection against five real servers on loopback.

``python -m tests.harness.nemesis --seconds 60 --seed N [--runs K] [--summary FILE] [--dir DIR] [--keep]``

One run starts five servers with ``--enable-fault-injection`` and then, side
by side until the run's end:

* client threads, each with its own ``KVClient`` and a short timeout, do
  random set/get/delete on a few keys (every set writes a value never written
  before, so a read names the write it saw) and record a history: a write
  that raised ``UnknownOutcome`` is kept with an unknown return, a write that
  raised any other ``KVError`` is dropped (it did not apply), and so is a
  failed read;
* the nemesis, on the main thread, follows a schedule drawn from
  ``random.Random(seed)``: it kill -9s servers (the leader more often than the
  others) and restarts them, freezes them with SIGSTOP and thaws them with
  SIGCONT, and cuts the network (isolate the leader, split 2/3, a cut that
  only one side enforces, a bridge node that sees both halves) through each
  server's ``Peer.SetPartition``, then heals it.  At most two servers are
  down at a time, except for brief "majority-down" faults that take three
  (the leader among them): operations must then fail or end unknown within
  their timeout rather than hang.  A server blocking a peer neither sends to
  it nor accepts from it, so a one-sided cut is "one-way-ish": the other side
  still connects and sends, and its messages are dropped on arrival.

The nemesis runs on the main thread on purpose: ``LocalCluster`` asks the
kernel to kill a server when the *thread* that started it exits, so servers
restarted from a short-lived thread would die with it.

At the end every fault is healed, a leader is awaited, every key is read once
more (recorded in the history) and the run fails on any anomaly: a history
that is not linearizable (``tests.harness.lincheck``), servers that do not converge
to one applied index and identical values, a server that exited on its own
(or not cleanly on SIGTERM at the end), "CRITICAL" or "Traceback" in a log
during the run (known gRPC noise and the final shutdown's records are reported
as warnings), or a client call that outlived its timeout by far (a hang).
On failure the cluster directory keeps the logs, ``history.jsonl`` and
``timeline.txt``.

The seed fixes the nemesis's choices, not the timing: which server leads,
how the clients interleave and what the machine's load does differ between
runs, so a failing seed is a good lead, not an exact replay.  The fault
timeline and the servers' logs (kept on failure) are the record.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from client import KVClient, KVError, UnknownOutcome
from paxos.common.hostfile import parse_hostfile
from protos import peer_pb2, peer_pb2_grpc
from tests.harness.lincheck import Op, check
from tools.localcluster import ClusterError, LocalCluster, agreed_leader

NODES = 5
CLIENTS = 6
# Servers snapshot and compact their log this often (commands), so that a
# run crashes and partitions servers while they snapshot, compact and
# fetch each other's snapshots.
SNAPSHOT_EVERY = 200
KEYS = 5
CLIENT_TIMEOUT = 2.5  # seconds; short, so operations resolve while faults come and go
KIND_WEIGHTS = {"get": 4, "set": 4, "delete": 2}

# The nemesis decides something every DECIDE_MIN..DECIDE_MAX seconds.
DECIDE_MIN, DECIDE_MAX = 0.3, 1.2
NEMESIS_POLL = 0.1  # granularity of healing faults on time
# What a decision is, by weight: nothing keeps calm stretches in the schedule.
# "majority-down" kills or freezes three servers at once (the leader among
# them), only when all five are up and only briefly: operations must then fail
# or end unknown within their timeout, not hang.  Otherwise at most two
# servers are down at a time, so the cluster mostly makes progress.
FAULT_WEIGHTS = {"none": 3, "kill": 3, "pause": 2, "partition": 3, "majority-down": 0.4}
LEADER_BIAS = 0.6  # chance that a kill or pause aims at the current leader
KILL_SECONDS = (0.5, 5.0)  # how long a killed server stays down
PAUSE_SECONDS = (0.3, 4.0)
MAJORITY_DOWN_SECONDS = (0.5, 3.0)
PARTITION_SECONDS = (1.5, 6.0)
PARTITION_SHAPES = ("isolate-leader", "split", "one-sided", "bridge")

# Deadlines of the end-of-run checks; generous, since a loaded 2-core machine
# runs five servers, the clients and the checker at once.
SET_PARTITION_TIMEOUT = 1.0
HEAL_SECONDS = 60.0
LEADER_SECONDS = 60.0
FINAL_READ_SECONDS = 60.0
FINAL_READ_TIMEOUT = 10.0
CONVERGE_SECONDS = 60.0
STOP_GRACE = 20.0
HANG_SLACK = 20.0  # a client call taking its timeout plus this long is a hang
TIMELINE_CONTEXT = 5.0  # seconds of fault timeline shown around a witness
LOG_MARKERS = ("CRITICAL", "Traceback")
# gRPC's own log records that carry a traceback but no fault of the server:
# sending the reply of a call whose client already gave up (deadline passed,
# e.g. while the server was frozen by SIGSTOP) fails inside gRPC, which logs it.
BENIGN_GRPC_RECORDS = {
    "grpc._cython.cygrpc: ExecuteBatchError raised in core by servicer method": "reply to a call its client had left",
}
LOG_RECORD_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ |=== paxos\.local)")
# Reach a restarted server within a second, not after gRPC's default backoff of up to two minutes.
PEER_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


# ------------------------------------------------------------------ records


@dataclass
class RunConfig:
    seconds: float = 60.0
    seed: int = 1
    directory: Path | None = None  # None: a fresh temporary directory
    clients: int = CLIENTS
    keys: int = KEYS
    client_timeout: float = CLIENT_TIMEOUT
    keep: bool = False  # keep the cluster directory even when the run passes
    snapshot_every: int = SNAPSHOT_EVERY


@dataclass
class RunResult:
    seed: int
    seconds: float  # the faulty stretch asked for
    wall_seconds: float  # the whole run: start, faults, healing, checks, stop
    check_seconds: float  # time the linearizability checker took
    directory: Path
    kept: bool
    operations: dict[str, dict[str, int]]
    faults: dict[str, int]
    leader_changes: int
    history_size: int
    anomalies: list[str] = field(default_factory=list)
    # Not failures: known gRPC log noise, and log records of the final shutdown (exit codes are checked).
    warnings: list[str] = field(default_factory=list)
    lincheck: str = ""
    timeline: list[tuple[float, str]] = field(default_factory=list)
    witness_window: tuple[float, float] | None = None
    rerun: str = ""
    # Snapshots the servers wrote, and installed from a peer, by their logs.
    snapshots: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def summary(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "ok": self.ok,
            "seconds": self.seconds,
            "wall_seconds": round(self.wall_seconds, 1),
            "check_seconds": round(self.check_seconds, 2),
            "operations": self.operations,
            "faults": self.faults,
            "leader_changes": self.leader_changes,
            "history_size": self.history_size,
            "snapshots": self.snapshots,
            "anomalies": self.anomalies,
            "warnings": self.warnings,
            "directory": str(self.directory) if self.kept else None,
        }

    def report(self) -> str:
        """Readable account of the run; on failure, everything needed to dig in."""
        ops = ", ".join(
            f"{kind} {c.get('ok', 0)} ok/{c.get('failed', 0)} failed/{c.get('unknown', 0)} unknown"
            for kind, c in sorted(self.operations.items())
        )
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        lines = [
            f"seed {self.seed}: {'ok' if self.ok else 'FAILED'} after {self.wall_seconds:.1f}s "
            f"({self.seconds:g}s of faults, lincheck {self.check_seconds:.2f}s, {self.history_size} ops checked)",
            f"  operations: {ops}",
            f"  faults: {faults}",
            f"  leader changes seen: {self.leader_changes} (sampled by the nemesis, so a lower bound)",
            f"  snapshots: {self.snapshots.get('written', 0)} written, "
            f"{self.snapshots.get('installed', 0)} installed from a peer",
        ]
        if self.warnings:
            lines.append(f"  warnings, not failures ({len(self.warnings)}):")
            lines += ["    " + line for warning in self.warnings for line in warning.splitlines()]
        if self.ok:
            return "\n".join(lines)
        lines.append(f"  anomalies ({len(self.anomalies)}):")
        lines += ["    " + line for anomaly in self.anomalies for line in anomaly.splitlines()]
        if self.lincheck:
            lines.append("  linearizability witness:")
            lines += ["    " + line for line in self.lincheck.splitlines()]
        lo, hi = self.witness_window or (-1.0, float("inf"))
        shown = [(t, what) for t, what in self.timeline if lo - TIMELINE_CONTEXT <= t <= hi + TIMELINE_CONTEXT]
        where = "around the witness" if self.witness_window else "whole run"
        lines.append(f"  fault timeline ({where}, seconds since start):")
        lines += [f"    {t:8.3f}  {what}" for t, what in shown]
        lines.append(f"  rerun: {self.rerun}")
        lines.append(f"  kept in {self.directory}: NAME.log per server, history.jsonl, timeline.txt")
        return "\n".join(lines)


class History:
    """Operations as the clients saw them, with counts per kind and outcome; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[Op] = []
        self.counts: dict[str, Counter[str]] = {kind: Counter() for kind in KIND_WEIGHTS}
        self.anomalies: list[str] = []

    def record(self, op: Op | None, kind: str, outcome: str) -> None:
        with self._lock:
            if op is not None:
                self.ops.append(op)
            self.counts[kind][outcome] += 1

    def anomaly(self, text: str) -> None:
        with self._lock:
            self.anomalies.append(text)


class Clock:
    """Seconds since the run began, shared by the history and the fault timeline."""

    def __init__(self) -> None:
        self._origin = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._origin


# ------------------------------------------------------------------ clients


class Worker(threading.Thread):
    """One client process of the history: random operations until told to stop."""

    def __init__(
        self, index: int, cluster: LocalCluster, config: RunConfig, history: History, clock: Clock,
        stop: threading.Event,
    ) -> None:  # fmt: skip
        super().__init__(name=f"nemesis-client-{index}", daemon=True)
        self.index = index
        self.kv = KVClient(parse_hostfile(cluster.hostfile), timeout=config.client_timeout)
        self.keys = [f"k{i}" for i in range(config.keys)]
        self.history, self.clock, self.stopping = history, clock, stop
        # Operation choices are seeded too, though timing decides what they meet.
        self.rng = random.Random(f"{config.seed}-client-{index}")
        self.timeout = config.client_timeout
        self.writes = 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.one_operation()
        finally:
            self.kv.close()

    def one_operation(self) -> None:
        kind = self.rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
        key = self.rng.choice(self.keys)
        arg: str | None = None
        if kind == "set":
            self.writes += 1
            arg = f"c{self.index}-{self.writes}"
        call = self.clock()
        unknown = Op(self.index, key, kind, arg, call, None)
        try:
            result = self.call(kind, key, arg)
        except UnknownOutcome:
            self.finish(unknown, "unknown")
        except KVError:
            self.finish(unknown, "failed")  # surely not applied (or a failed read)
        except Exception as exc:  # the client library must raise only KVError: anything else is a bug
            self.history.anomaly(f"client {self.index}: {kind}({key!r}) raised {exc!r}, not a KVError")
            self.finish(unknown, "failed" if kind == "get" else "unknown")
        else:
            self.finish(Op(self.index, key, kind, arg, call, self.clock(), result), "ok")

    def call(self, kind: str, key: str, arg: str | None) -> object:
        if kind == "get":
            return self.kv.get(key)
        if kind == "delete":
            return self.kv.delete(key)
        assert arg is not None
        self.kv.set(key, arg)
        return None

    def finish(self, op: Op, outcome: str) -> None:
        """Record ``op`` unless it failed (then it did not happen); flag a call that outlived its timeout."""
        took = (op.ret if op.ret is not None else self.clock()) - op.call
        if took > self.timeout + HANG_SLACK:
            self.history.anomaly(
                f"client {self.index}: {op.kind}({op.key!r}) called at {op.call:.3f}s took {took:.1f}s "
                f"with a {self.timeout:g}s timeout (hang)"
            )
        self.history.record(None if outcome == "failed" else op, op.kind, outcome)


# ------------------------------------------------------------------ nemesis


class Nemesis:
    """Injects and heals faults on a seeded schedule; every fault goes in the timeline."""

    def __init__(self, cluster: LocalCluster, rng: random.Random, clock: Clock, log: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.names = cluster.names
        self.rng, self.clock, self.log = rng, clock, log
        self.timeline: list[tuple[float, str]] = []
        self.faults: Counter[str] = Counter()
        self.anomalies: list[str] = []
        self.killed: dict[str, float] = {}  # name -> when to restart it
        self.paused: dict[str, float] = {}  # name -> when to resume it
        self.partition_until: float | None = None
        self.wanted: dict[str, frozenset[str]] = {n: frozenset() for n in self.names}  # peers each should block
        self.blocking: dict[str, frozenset[str]] = dict(self.wanted)  # what each server was last told
        self.leader_ballots: set[str] = set()
        self.leader: str | None = None
        self._status = KVClient(parse_hostfile(cluster.hostfile), timeout=1.0)
        self._channels = {n: grpc.insecure_channel(cluster.address(n), PEER_CHANNEL_OPTIONS) for n in self.names}
        self._peers = {n: peer_pb2_grpc.PeerStub(ch) for n, ch in self._channels.items()}

    def close(self) -> None:
        self._status.close()
        for channel in self._channels.values():
            channel.close()

    def note(self, what: str) -> None:
        t = self.clock()
        self.timeline.append((t, what))
        self.log(f"{t:8.3f}  {what}")

    # --------------------------------------------------------- the schedule

    def run_until(self, end: float) -> None:
        next_decision = self.clock() + self.rng.uniform(DECIDE_MIN, DECIDE_MAX)
        while self.clock() < end:
            now = self.clock()
            self.heal_due(now)
            self.check_crashes()
            self.apply_partition()
            if now >= next_decision:
                self.observe()
                self.decide()
                next_decision = self.clock() + self.rng.uniform(DECIDE_MIN, DECIDE_MAX)
            # Pacing the schedule, not waiting for a cluster state.
            time.sleep(NEMESIS_POLL)

    def decide(self) -> None:
        kind = self.rng.choices(list(FAULT_WEIGHTS), weights=list(FAULT_WEIGHTS.values()))[0]
        aim_at_leader = self.rng.random() < LEADER_BIAS
        down = len(self.killed) + len(self.paused)
        if kind in ("kill", "pause") and down < NODES // 2:
            candidates = [n for n in self.names if n not in self.killed and n not in self.paused]
            victim = self.rng.choice(candidates)
            if aim_at_leader and self.leader in candidates:
                victim = self.leader
            seconds = self.rng.uniform(*(KILL_SECONDS if kind == "kill" else PAUSE_SECONDS))
            (self.kill if kind == "kill" else self.pause)(victim, seconds)
        elif kind == "majority-down" and down == 0:
            victims = self.rng.sample(self.names, NODES // 2 + 1)
            if self.leader is not None and self.leader not in victims:
                victims[0] = self.leader
            how = self.rng.choice(("kill", "pause"))
            self.faults["majority-down"] += 1
            self.note(f"majority down ({how}): {', '.join(sorted(victims))}")
            for victim in victims:
                (self.kill if how == "kill" else self.pause)(victim, self.rng.uniform(*MAJORITY_DOWN_SECONDS))
        elif kind == "partition" and self.partition_until is None:
            self.partition(self.rng.choice(PARTITION_SHAPES))

    def _role(self, name: str) -> str:
        return " (leader)" if name == self.leader else ""

    def kill(self, name: str, seconds: float) -> None:
        role = self._role(name)
        code = self.cluster.kill(name, signal.SIGKILL)
        self.paused.pop(name, None)  # SIGKILL ends a stopped process too
        self.blocking[name] = frozenset()  # a restarted server blocks nobody until told again
        self.killed[name] = self.clock() + seconds
        self.faults["kill"] += 1
        self.note(f"kill -9 {name}{role} (exit {code}); restart at {self.killed[name]:.3f}")

    def pause(self, name: str, seconds: float) -> None:
        self.cluster.pause(name)
        self.paused[name] = self.clock() + seconds
        self.faults["pause"] += 1
        self.note(f"SIGSTOP {name}{self._role(name)}; SIGCONT at {self.paused[name]:.3f}")

    def partition(self, shape: str) -> None:
        names = list(self.names)
        self.rng.shuffle(names)
        leader = self.leader if self.leader in names else names[0]
        names.remove(leader)
        names.insert(0, leader)  # the leader is on the first (smaller) side
        if shape == "isolate-leader":
            cuts = [([leader], names[1:], True)]
        elif shape == "split":
            cuts = [(names[:2], names[2:], True)]
        elif shape == "one-sided":
            cuts = [(names[:2], names[2:], False)]  # only the minority drops the traffic
        else:  # bridge: names[4] talks to both halves, which cannot talk to each other
            cuts = [(names[:2], names[2:4], True)]
        wanted: dict[str, set[str]] = {n: set() for n in self.names}
        for side, other, both_ways in cuts:
            for a in side:
                wanted[a] |= set(other)
            if both_ways:
                for b in other:
                    wanted[b] |= set(side)
        self.wanted = {n: frozenset(v) for n, v in wanted.items()}
        self.partition_until = self.clock() + self.rng.uniform(*PARTITION_SECONDS)
        self.faults[f"partition:{shape}"] += 1
        sides = " | ".join(f"{a}x{sorted(b)}" for a, b in sorted(self.wanted.items()) if b)
        self.note(f"partition {shape}: {sides}; heal at {self.partition_until:.3f}")
        self.apply_partition()

    def heal_due(self, now: float) -> None:
        for name, when in list(self.paused.items()):
            if now >= when:
                self.resume(name)
        for name, when in list(self.killed.items()):
            if now >= when:
                self.restart(name)
        if self.partition_until is not None and now >= self.partition_until:
            self.heal_partition()

    def resume(self, name: str) -> None:
        self.cluster.resume(name)
        del self.paused[name]
        self.note(f"SIGCONT {name}")

    def restart(self, name: str) -> None:
        self.cluster.start_node(name)
        del self.killed[name]
        self.note(f"restart {name}")

    def heal_partition(self) -> None:
        self.wanted = {n: frozenset() for n in self.names}
        self.partition_until = None
        self.note("heal partition")
        self.apply_partition()

    def apply_partition(self) -> bool:
        """Tell every live, running server that blocks the wrong peers; True when all agree."""
        settled = True
        for name in self.names:
            if self.blocking[name] == self.wanted[name]:
                continue
            if name in self.killed or name in self.paused:
                settled = False  # told when it is back
                continue
            try:
                self._peers[name].SetPartition(
                    peer_pb2.Partition(blocked=sorted(self.wanted[name])), timeout=SET_PARTITION_TIMEOUT
                )
            except grpc.RpcError:
                settled = False  # e.g. a restarted server not listening yet: try again next round
                continue
            self.blocking[name] = self.wanted[name]
        return settled

    # ------------------------------------------------------- observations

    def observe(self) -> None:
        """Find the leader (for aiming faults) and note each new leadership term."""
        nodes = self._status.status()
        for node in nodes:
            if node["role"] == "leader":
                self.leader_ballots.add(str(node["ballot"]))
        self.leader = agreed_leader(nodes)

    def check_crashes(self) -> None:
        """A server that exited although we did not kill it is an anomaly; restart it to go on."""
        for name in self.names:
            if name in self.killed or self.cluster.pid(name) is None or self.cluster.is_running(name):
                continue
            code = self.cluster.kill(name)  # already exited: just reaps it and gives the code
            self.anomalies.append(
                f"{name} exited on its own with code {code}; last lines of {self.cluster.log_path(name)}:\n"
                + self.cluster.log_tail(name)
            )
            self.note(f"CRASH {name} exited with code {code}; restarting it")
            self.blocking[name] = frozenset()
            self.cluster.start_node(name)

    # ------------------------------------------------------------ healing

    def heal_all(self) -> None:
        """Thaw, restart and reconnect every server; ClusterError if a server will not listen."""
        for name in list(self.paused):
            self.resume(name)
        for name in list(self.killed):
            self.restart(name)
        if self.partition_until is not None or any(self.wanted.values()):
            self.heal_partition()
        deadline = time.monotonic() + HEAL_SECONDS
        while not self.apply_partition():
            self.check_crashes()
            if time.monotonic() > deadline:
                stuck = sorted(n for n in self.names if self.blocking[n] != self.wanted[n])
                raise ClusterError(f"could not clear the partition on {', '.join(stuck)} in {HEAL_SECONDS:g}s")
            time.sleep(NEMESIS_POLL)
        self.note("all faults healed")

    @property
    def leader_changes(self) -> int:
        return max(len(self.leader_ballots) - 1, 0)


# ---------------------------------------------------------------- the run


def run(config: RunConfig, log: Callable[[str], None] = lambda line: None) -> RunResult:
    """One run: start the cluster, inject faults for ``config.seconds``, heal, check; never raises on anomalies."""
    started = time.monotonic()
    directory = config.directory or Path(tempfile.mkdtemp(prefix=f"paxoskv-nemesis-{config.seed}-"))
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty; a nemesis run needs a fresh directory")
    server_args = ["--enable-fault-injection", "--snapshot-every", str(config.snapshot_every)]
    cluster = LocalCluster(directory, nodes=NODES, server_args=server_args)
    clock = Clock()
    history = History()
    nemesis = Nemesis(cluster, random.Random(config.seed), clock, log)
    anomalies: list[str] = []
    check_seconds, lincheck_text, window = 0.0, "", None
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=LEADER_SECONDS)
        nemesis.note(f"cluster up in {directory}; seed {config.seed}")
        stop = threading.Event()
        workers = [Worker(i, cluster, config, history, clock, stop) for i in range(config.clients)]
        for worker in workers:
            worker.start()
        try:
            nemesis.run_until(clock() + config.seconds)
        finally:
            stop.set()
            anomalies += _join(workers, config.client_timeout + HANG_SLACK)
        nemesis.note("clients stopped; healing")
        anomalies += _finish(cluster, nemesis, history, clock, config)
        check_started = time.monotonic()
        verdict = check(history.ops)
        check_seconds = time.monotonic() - check_started
        if not verdict.ok:
            lincheck_text = verdict.describe()
            anomalies.append(f"history not linearizable on key {verdict.key!r} (witness below)")
            times = [t for op in verdict.witness for t in (op.call, op.ret) if t is not None]
            window = (min(times), max(times)) if times else None
    except ClusterError as exc:  # includes NodeExited
        anomalies.append(f"cluster error: {exc}")
    finally:
        nemesis.close()
        # Log lines up to here come from the run; the rest from the final SIGTERM.
        run_part = {name: _log_size(cluster, name) for name in cluster.names}
        anomalies += _stop(cluster)
        found, warnings = _scan_logs(cluster, run_part)
        anomalies += found
        snapshots = _count_snapshots(cluster)
    anomalies = nemesis.anomalies + history.anomalies + anomalies
    kept = bool(anomalies) or config.keep
    if kept:
        _save(directory, history, nemesis.timeline)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return RunResult(
        seed=config.seed,
        seconds=config.seconds,
        wall_seconds=time.monotonic() - started,
        check_seconds=check_seconds,
        directory=directory,
        kept=kept,
        operations={kind: dict(c) for kind, c in history.counts.items()},
        faults=dict(nemesis.faults),
        leader_changes=nemesis.leader_changes,
        history_size=len(history.ops),
        anomalies=anomalies,
        warnings=warnings,
        lincheck=lincheck_text,
        timeline=nemesis.timeline,
        witness_window=window,
        rerun=_rerun_command(config),
        snapshots=snapshots,
    )


def _rerun_command(config: RunConfig) -> str:
    words = ["python -m tests.harness.nemesis", f"--seconds {config.seconds:g}", f"--seed {config.seed}"]
    if config.clients != CLIENTS:
        words.append(f"--clients {config.clients}")
    if config.keys != KEYS:
        words.append(f"--keys {config.keys}")
    if config.client_timeout != CLIENT_TIMEOUT:
        words.append(f"--client-timeout {config.client_timeout:g}")
    if config.snapshot_every != SNAPSHOT_EVERY:
        words.append(f"--snapshot-every {config.snapshot_every}")
    return " ".join(words)


def _save(directory: Path, history: History, timeline: Sequence[tuple[float, str]]) -> None:
    """Keep the history (one JSON op a line, in call order) and the fault timeline next to the logs."""
    with (directory / "history.jsonl").open("w", encoding="utf-8") as out:
        for op in sorted(history.ops, key=lambda o: o.call):
            record = {"process": op.process, "key": op.key, "kind": op.kind, "arg": op.arg}
            record |= {"call": round(op.call, 6), "ret": None if op.ret is None else round(op.ret, 6)}
            out.write(json.dumps(record | {"result": op.result}) + "\n")
    lines = [f"{t:8.3f}  {what}\n" for t, what in timeline]
    (directory / "timeline.txt").write_text("".join(lines), encoding="utf-8")


def _join(workers: Sequence[Worker], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.join(max(deadline - time.monotonic(), 0))
    return [f"{w.name} still running {timeout:g}s after the run ended (hang)" for w in workers if w.is_alive()]


def _finish(cluster: LocalCluster, nemesis: Nemesis, history: History, clock: Clock, config: RunConfig) -> list[str]:
    """Heal, await a leader, read every key once more into the history, check convergence."""
    nemesis.heal_all()
    leader = cluster.wait_for_leader(timeout=LEADER_SECONDS)
    nemesis.note(f"leader after healing: {leader}")
    nemesis.observe()
    anomalies: list[str] = []
    keys = [f"k{i}" for i in range(config.keys)]
    with cluster.client(timeout=FINAL_READ_TIMEOUT) as kv:
        for key in keys:
            anomalies += _final_read(kv, key, history, clock)
    anomalies += _converge(cluster, keys)
    nemesis.note("final reads and convergence checked")
    return anomalies


def _final_read(kv: KVClient, key: str, history: History, clock: Clock) -> list[str]:
    deadline = time.monotonic() + FINAL_READ_SECONDS
    while True:
        call = clock()
        try:
            value = kv.get(key)
        except KVError as exc:
            history.record(None, "get", "failed")
            if time.monotonic() > deadline:
                return [f"final read of {key!r} still failing after {FINAL_READ_SECONDS:g}s: {exc}"]
            continue  # the client already waited out its own timeout
        history.record(Op("final", key, "get", None, call, clock(), value), "get", "ok")
        return []


def _converge(cluster: LocalCluster, keys: Sequence[str]) -> list[str]:
    """Poll until every server applied the same index and holds the same values."""
    members = parse_hostfile(cluster.hostfile)
    deadline = time.monotonic() + CONVERGE_SECONDS
    last = "no status yet"
    with KVClient(members, timeout=1.0) as probe:
        while True:
            cluster.check_alive()
            nodes = probe.status()
            indexes = {str(n["name"]): int(n["applied_index"]) for n in nodes if n["reachable"]}  # type: ignore[call-overload]
            if len(indexes) == len(members) and len(set(indexes.values())) == 1:
                stores = _local_values(members, keys)
                again = {str(n["name"]): n["applied_index"] for n in probe.status() if n["reachable"]}
                if stores is not None and again == indexes:
                    if all(store == stores[0] for store in stores):
                        return []
                    table = "\n".join(f"  {m.name}: {s}" for m, s in zip(members, stores, strict=True))
                    return [f"servers applied the same index {indexes} but hold different values:\n{table}"]
            last = f"applied indexes {indexes}"
            if time.monotonic() > deadline:
                return [f"servers did not converge within {CONVERGE_SECONDS:g}s: {last}"]
            time.sleep(0.2)


def _local_values(members: Sequence[object], keys: Sequence[str]) -> list[dict[str, str | None]] | None:
    """Each server's own copy of every key (consistency="local"), or None if one did not answer."""
    stores = []
    for member in members:
        with KVClient([member], timeout=2.0) as one:  # type: ignore[list-item]
            try:
                stores.append({key: one.get(key, consistency="local") for key in keys})
            except KVError:
                return None
    return stores


def _stop(cluster: LocalCluster) -> list[str]:
    """SIGTERM every server; one that does not exit cleanly is an anomaly."""
    anomalies = []
    for name in cluster.names:
        if cluster.pid(name) is None:
            continue
        code = cluster.kill(name, signal.SIGTERM, grace=STOP_GRACE)
        if code != 0:
            anomalies.append(
                f"{name} exited with code {code} on SIGTERM at the end; last lines of its log:\n"
                + cluster.log_tail(name)
            )
    cluster.stop()
    return anomalies


def _count_snapshots(cluster: LocalCluster) -> dict[str, int]:
    counts = {"written": 0, "installed": 0}
    for name in cluster.names:
        try:
            text = cluster.log_path(name).read_text(errors="replace")
        except OSError:
            continue
        counts["written"] += len(re.findall(r"snapshot at slot \d+ written", text))
        counts["installed"] += len(re.findall(r"installed the snapshot at slot \d+ from", text))
    return counts


def _log_size(cluster: LocalCluster, name: str) -> int:
    try:
        return cluster.log_path(name).stat().st_size
    except OSError:
        return 0


def _scan_logs(cluster: LocalCluster, run_part: dict[str, int]) -> tuple[list[str], list[str]]:
    """Log records with "CRITICAL" or "Traceback": (anomalies, warnings).

    A record is a line with a timestamp and its continuation lines.  Records
    written by the final SIGTERM shutdown (whose exit codes are checked) and
    known gRPC noise (BENIGN_GRPC_RECORDS) are warnings; any other is an anomaly.
    """
    anomalies, warnings = [], []
    for name in cluster.names:
        path = cluster.log_path(name)
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for shutdown, part in ((False, data[: run_part[name]]), (True, data[run_part[name] :])):
            bad: list[list[str]] = []
            benign: Counter[str] = Counter()
            for record in _records(part.decode("utf-8", errors="replace")):
                if not any(marker in line for line in record for marker in LOG_MARKERS):
                    continue
                why = next((w for pattern, w in BENIGN_GRPC_RECORDS.items() if pattern in record[0]), None)
                if why is not None:
                    benign[f"gRPC log noise ({why})"] += 1
                elif shutdown:
                    benign[f"traceback or CRITICAL in: {record[0]}"] += 1
                else:
                    bad.append(record)
            when = "while stopping at the end" if shutdown else "during the run"
            if bad:
                excerpt = "\n".join(bad[0][:12])
                first = f"the first of {len(bad)}" if len(bad) > 1 else "one"
                anomalies.append(f"{path}, {when}: log records with a traceback or CRITICAL, {first}:\n{excerpt}")
            warnings += [f"{path}, {when}: {n} x {what}" for what, n in benign.items()]
    return anomalies, warnings


def _records(text: str) -> list[list[str]]:
    records: list[list[str]] = []
    for line in text.splitlines():
        if LOG_RECORD_START.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return records


# ------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.nemesis",
        description="Inject faults into five real paxoskv servers while clients run; check the history.",
        epilog="Exit codes: 0 no anomaly in any run, 1 an anomaly (details printed, cluster directory kept).",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="faulty stretch of each run (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run; run i uses seed+i (default 1)")
    parser.add_argument("--runs", type=int, default=1, help="number of runs (default 1)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"client threads (default {CLIENTS})")
    parser.add_argument("--keys", type=int, default=KEYS, help=f"keys the clients use (default {KEYS})")
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=CLIENT_TIMEOUT,
        help=f"per-operation timeout (default {CLIENT_TIMEOUT:g}s)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=SNAPSHOT_EVERY,
        help=f"the servers' --snapshot-every: snapshot and compact after this many commands (default {SNAPSHOT_EVERY})",
    )
    parser.add_argument("--dir", type=Path, help="put each run's cluster in DIR/seed-N (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep cluster directories of passing runs too")
    parser.add_argument("--summary", type=Path, metavar="FILE", help="also write the runs' summaries as JSON")
    parser.add_argument("--quiet", action="store_true", help="do not print the fault timeline as it happens")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    results = []
    for i in range(opts.runs):
        seed = opts.seed + i
        config = RunConfig(
            seconds=opts.seconds,
            seed=seed,
            directory=opts.dir / f"seed-{seed}" if opts.dir else None,
            clients=opts.clients,
            keys=opts.keys,
            client_timeout=opts.client_timeout,
            keep=opts.keep,
            snapshot_every=opts.snapshot_every,
        )
        print(f"=== run {i + 1}/{opts.runs}: seed {seed}, {opts.seconds:g}s", flush=True)
        result = run(config, log=(lambda line: None) if opts.quiet else (lambda line: print(line, flush=True)))
        results.append(result)
        print(result.report(), flush=True)
    failed = [r.seed for r in results if not r.ok]
    print(f"=== {len(results)} run(s), {len(failed)} with anomalies" + (f": seeds {failed}" if failed else ""))
    if opts.summary:
        opts.summary.write_text(json.dumps([r.summary() for r in results], indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
