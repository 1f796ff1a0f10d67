"""paxoskv side by side with etcd (and PySyncObj), on this machine, in one run.

    python -m benchmarks.compare [--seconds S] [--clients 1,8,64,256] [--systems ...] [--out docs/benchmarks]

For each system it starts a five-member cluster on 127.0.0.1 with its data in
one temporary directory (``--workdir`` to choose where; the filesystem is
recorded, because fsync cost depends on it), then for each client count runs
writes and linearizable reads, each ``--seconds`` long after a discarded
``--warmup`` run:

* etcd (the ``etcd`` binary, e.g. Debian's ``etcd-server``; fsync on, its
  default), driven by ``python -m benchmarks.etcd_api.bench``;
* paxoskv (``tools.localcluster.LocalCluster``), driven by ``python -m paxos.bench``
  on the library's session path (``AsyncKVClient``: one session stream per
  server, operations of different clients in flight together share a message);
* paxoskv-unary: a cluster of its own, driven by ``python -m paxos.bench
  --unary``, one gRPC call per operation like etcd.

The load generators run as a separate process and measure alike: closed
loop, N clients in one asyncio process, each with one operation in flight,
all sent to the leader.  The etcd one reuses tools.bench's option parser,
``Stats`` and ``summarize`` (so the JSON keys are the same), and its loop is
tools.bench's with the operation passed in as a function.

Besides ops/s and latency, every row has the servers' CPU time per operation:
user+system time of all five server processes (``/proc/PID/stat``, sampled by
``benchmarks.server_cpu``) over the measured run, divided by the operations
completed in it.  The window is the load process's own: it ends when the
process reports and lasts the run time it reports, so start-up, the warm-up
run and the keys written before a read run are not counted.

PySyncObj is measured too, but it is not the same kind of system: Raft in
Python with the state in memory, no fsync, no client RPC (commands are
submitted inside the leader's process) and no linearizable reads.  Its
writes/s are reported in their own rows and never in the ratios.

Writes ``results.md``, ``results.json`` and ``results.png`` to ``--out``.
Linux only (children are tied to this process with PR_SET_PDEATHSIG, so none
outlives it; CPU time comes from /proc).  Needs matplotlib (for the plot;
``--no-plot`` to go without) and pysyncobj (pip), and etcd (apt); says how to
get any that is missing before starting anything.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from benchmarks.server_cpu import CpuSampler, ProcessCpuError, total_cpu_seconds
from tools.bench import KEYSPACE, READ_KEYS, Stats, summarize
from tools.localcluster import ClusterError, LocalCluster, free_ports

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NODES = 5
DEFAULT_CLIENTS = (1, 8, 64, 256)
DEFAULT_SECONDS = 10.0
DEFAULT_WARMUP = 2.0
QUICK_CLIENTS = (1, 8)
QUICK_SECONDS = 3.0
QUICK_WARMUP = 1.0
DEFAULT_VALUE_SIZE = 128
ETCD_KEY_SIZE = 16
RATIO_CLIENTS = 64
SYSTEMS = ("etcd", "paxoskv", "paxoskv-unary", "pysyncobj")
# paxoskv's systems and the load generator path each one uses (paxos.bench reports it as "path").
PAXOSKV_PATHS = {"paxoskv": "session", "paxoskv-unary": "unary"}
# How each system's operations travel, as the results page says it.
PROTOCOLS = {
    "etcd": "etcd's gRPC API from Python (grpc.aio stubs of etcdserverpb): one unary `KV.Put` or `KV.Range` call "
    "per operation, one channel per member",
    "paxoskv": "the library's session path (`AsyncKVClient`, `paxos.bench`'s default): one bidirectional `Session` "
    "stream per server shared by all N clients; the operations of different clients that are in flight at the same "
    "moment travel together in one stream message, and so do their replies",
    "paxoskv-unary": "`paxos.bench --unary`: one unary `Write` or `Get` gRPC call per operation, one channel per "
    "server, as etcd is driven",
    "pysyncobj": "no client protocol: `ReplDict.set` called inside the leader's own process",
}
PROTOCOL_LABELS = {"etcd": "unary gRPC", "paxoskv": "session stream", "paxoskv-unary": "unary gRPC",
                   "pysyncobj": "in-process"}  # fmt: skip
OPS = ("set", "get")
OP_LABELS = {"set": "write", "get": "linearizable read"}

STARTUP_SECONDS = 30.0  # a cluster must be healthy within this long
STOP_SECONDS = 5.0  # SIGTERM grace before SIGKILL
POLL_SECONDS = 0.2
LOAD_SLACK_SECONDS = 60.0  # a load process may take this much longer than --seconds (startup, preload, drain)
SYNCOBJ_STABLE_SECONDS = 1.0  # a PySyncObj leader must hold this long before the load starts
SYNCOBJ_DRAIN_SECONDS = 10.0  # after a run, in-flight commands get this long to finish
# PySyncObj's defaults except batching: with appendEntriesUseBatch (the default)
# a command waits for the next 0.1 s append-entries round, ~10 commands/s per
# submitter.  Without it the leader sends each command at once, as paxoskv
# and etcd do (they batch only what piles up meanwhile).
SYNCOBJ_CONF = {"appendEntriesUseBatch": False}
LOG_SAMPLE_MESSAGES = 6
MESSAGE_CHARS = 200
_NUMBER = re.compile(r"\d+")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.,]+Z?\s*")
ETCD_INSTALL_HINT = (
    "etcd not found: install it with 'apt-get update && apt-get install -y etcd-server' "
    "(Debian/Ubuntu), or give an etcd 3.4+ binary with --etcd PATH, or leave it out with --systems"
)

# Runs in each child before the real program: the kernel SIGKILLs the child
# when this process goes away, so no server outlives a killed benchmark.
# (paxos.local does the same for its servers.)
_DEATHSIG_EXEC = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class BenchmarkError(RuntimeError):
    """A cluster or a load run failed; the message says which and where its logs are."""


class _Terminated(BaseException):
    """SIGTERM or SIGHUP: unwind so that every cluster is stopped."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _say(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# ------------------------------------------------------------- child processes


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path


def _dies_with_us(argv: Sequence[str]) -> list[str]:
    """``argv`` (a full path first) run through the shim that ties its life to this process."""
    return [sys.executable, "-c", _DEATHSIG_EXEC, str(os.getpid()), *argv]


def _spawn(name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> _Child:
    log = log_path.open("ab")
    process = subprocess.Popen(
        _dies_with_us(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    return _Child(name, process, log, log_path)


def _stop_children(children: Sequence[_Child]) -> None:
    """SIGTERM all, wait up to STOP_SECONDS together, SIGKILL the rest, close the logs."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _say(f"{child.name} ignored SIGTERM for {STOP_SECONDS:g}s; killing it")
            child.process.kill()
            child.process.wait()
        child.log.close()


def _check_children(children: Sequence[_Child]) -> None:
    for child in children:
        code = child.process.poll()
        if code is not None:
            raise BenchmarkError(
                f"{child.name} exited with code {code}; last lines of {child.log_path}:\n{_tail(child.log_path)}"
            )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read the log: {exc})"


class LogWindow:
    """The log lines written after construction: what servers said under load, not while starting or stopping."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.offsets = {path: path.stat().st_size if path.exists() else 0 for path in paths}

    def lines(self) -> list[str]:
        lines: list[str] = []
        for path, offset in self.offsets.items():
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    text = f.read().decode("utf-8", errors="replace")
            except OSError:
                continue
            lines += [line for line in text.splitlines() if line.strip()]
        return lines


def _log_message(line: str) -> str:
    """The message of a log line without its timestamp (etcd logs JSON, paxoskv text)."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
            return f"{entry.get('level', '?')}: {entry.get('msg', line)}"
        except ValueError:
            pass
    return _TIMESTAMP.sub("", line)[:MESSAGE_CHARS]


def _message_kind(message: str) -> str:
    """The message with its numbers replaced by N, so that repeats of one message count together."""
    return _NUMBER.sub("N", message)


def summarize_logs(lines: Sequence[str]) -> dict[str, Any]:
    """How many lines, and the most frequent messages with their counts."""
    common = Counter(_message_kind(_log_message(line)) for line in lines).most_common(LOG_SAMPLE_MESSAGES)
    return {"lines": len(lines), "top_messages": [{"count": n, "message": m} for m, n in common]}


# ------------------------------------------------------------------- etcd


def etcd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    first = out.splitlines()[0] if out else "unknown"
    return first.replace("etcd Version:", "").strip()


class EtcdCluster:
    """Five etcd members on 127.0.0.1 with distinct client and peer ports; a context manager.

    Data and logs live in ``directory``.  Every ``ETCD_*`` variable is removed
    from the members' environment: etcd reads its configuration from them
    too, and refuses to start when one duplicates a flag.
    """

    def __init__(self, directory: Path, binary: str, nodes: int = NODES) -> None:
        self.directory = directory
        self.binary = shutil.which(binary) or binary  # the shim execs a path
        ports = free_ports(2 * nodes)
        self.names = [f"etcd{i}" for i in range(1, nodes + 1)]
        self.client_ports = dict(zip(self.names, ports[:nodes], strict=True))
        self.peer_ports = dict(zip(self.names, ports[nodes:], strict=True))
        self.hostfile = directory / "etcd-hosts.txt"
        self._children: list[_Child] = []

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"{name} 127.0.0.1:{self.client_ports[name]}" for name in self.names]
        self.hostfile.write_text("# etcd client addresses, written by benchmarks.compare\n" + "\n".join(lines) + "\n")
        env = {k: v for k, v in _env().items() if not k.startswith("ETCD_")}
        for name in self.names:
            self._children.append(_spawn(name, self._command(name), self.log_paths[self.names.index(name)], env))

    @property
    def log_paths(self) -> list[Path]:
        return [self.directory / f"{name}.log" for name in self.names]

    def _command(self, name: str) -> list[str]:
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        client = f"http://127.0.0.1:{self.client_ports[name]}"
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        return [
            self.binary,
            "--name", name,
            "--data-dir", str(self.directory / name),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster,
            "--initial-cluster-token", "paxoskv-compare",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip

    def wait_healthy(self, timeout: float = STARTUP_SECONDS) -> None:
        """Poll every member's /health until all say true; BenchmarkError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            _check_children(self._children)
            sick = [name for name in self.names if not self._healthy(name)]
            if not sick:
                return
            if time.monotonic() >= deadline:
                raise BenchmarkError(
                    f"etcd not healthy after {timeout:g}s ({', '.join(sick)}); logs in {self.directory}"
                )
            time.sleep(POLL_SECONDS)

    def _healthy(self, name: str) -> bool:
        url = f"http://127.0.0.1:{self.client_ports[name]}/health"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                return bool(json.load(reply).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def check_alive(self) -> None:
        _check_children(self._children)

    @property
    def pids(self) -> list[int]:
        """The members' process ids (the shim execs etcd, so each child's pid is its member's)."""
        return [child.process.pid for child in self._children]

    def stop(self) -> None:
        """Followers first, one at a time, the leader last.

        An etcd leader that gets SIGTERM first tries to hand leadership over
        and waits up to 7 s (5 s + two election timeouts) for it; that can
        only fail once too few members are left for a quorum, which is what
        happens to a leader stopped among the last two.  A follower stops
        at once, and so does a leader left alone.
        """
        left = list(self._children)
        while left:
            child = next((c for c in left if not self._is_leader(c.name)), left[0])
            left.remove(child)
            _stop_children([child])
        self._children = []

    def _is_leader(self, name: str) -> bool:
        url = f"http://127.0.0.1:{self.client_ports[name]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                return b"\netcd_server_is_leader 1\n" in reply.read()
        except OSError:
            return False


# ------------------------------------------------------------------- loads


@dataclass(frozen=True)
class Plan:
    clients: tuple[int, ...]
    seconds: float
    warmup: float
    value_size: int


def run_load(command: Sequence[str], seconds: float, server_pids: Sequence[int]) -> dict[str, Any]:
    """Run one load process; its JSON summary (its last stdout line) with the servers' CPU time added.

    The servers' CPU is sampled while the process runs; the measured window
    ends when the summary arrives and lasts the ``seconds`` it reports.
    """
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as stderr, CpuSampler(server_pids) as sampler:
        process = subprocess.Popen(
            _dies_with_us(command), stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env(), cwd=PROJECT_ROOT
        )

        def give_up() -> None:
            timed_out.set()
            process.kill()

        watchdog = threading.Timer(seconds + LOAD_SLACK_SECONDS, give_up)
        watchdog.start()
        last_line, reported_at = "", 0.0
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.strip():
                    last_line, reported_at = line, time.monotonic()
            code = process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        if timed_out.is_set():
            raise BenchmarkError(f"load run did not finish in {seconds + LOAD_SLACK_SECONDS:g}s: {shlex.join(command)}")
        try:
            result: dict[str, Any] = json.loads(last_line)
        except ValueError:
            stderr.seek(0)
            tail = "\n".join(stderr.read().decode("utf-8", errors="replace").strip().splitlines()[-10:])
            raise BenchmarkError(f"load run failed (exit {code}): {shlex.join(command)}\n{tail}") from None
    cpu = sampler.between(reported_at - float(result["seconds"]), reported_at)
    return {**result, **cpu_fields(cpu, int(result["ops"]))}


def cpu_fields(cpu_seconds: float, ops: int) -> dict[str, float]:
    """The servers' CPU over a run, total and per completed operation (NaN when none completed)."""
    per_op = cpu_seconds / ops * 1e6 if ops else float("nan")
    return {"server_cpu_seconds": round(cpu_seconds, 3), "server_cpu_us_per_op": round(per_op, 1)}


def measure(
    system: str, base_command: Sequence[str], plan: Plan, check_alive: Any, server_pids: Sequence[int]
) -> list[dict[str, Any]]:
    """Writes then reads at every client count: a discarded warm-up run, then the measured one."""
    results = []
    for op in OPS:
        for clients in plan.clients:
            args = [
                *base_command,
                "--op",
                op,
                "--clients",
                str(clients),
                "--value-size",
                str(plan.value_size),
                "--json",
            ]
            if plan.warmup > 0:
                run_load([*args, "--seconds", str(plan.warmup)], plan.warmup, server_pids)
            result = run_load([*args, "--seconds", str(plan.seconds)], plan.seconds, server_pids)
            check_alive()
            expected_path = PAXOSKV_PATHS.get(system)
            if expected_path is not None and result.get("path") != expected_path:
                raise BenchmarkError(f"{system} load ran on path {result.get('path')!r}, not {expected_path!r}")
            results.append({"system": system, "protocol": PROTOCOL_LABELS[system], **result})
            _say(f"{system} {op} x{clients}: {result['ops_per_sec']} ops/s, p50 {result['p50_ms']} ms, "
                 f"p99 {result['p99_ms']} ms, server CPU {result['server_cpu_us_per_op']} us/op, "
                 f"errors {result['errors']}")  # fmt: skip
    return results


def measure_etcd(workdir: Path, binary: str, plan: Plan) -> tuple[list[dict[str, Any]], list[str]]:
    with EtcdCluster(workdir / "etcd", binary) as cluster:
        _say(f"etcd: 5 members, client ports {sorted(cluster.client_ports.values())}, "
             f"peer ports {sorted(cluster.peer_ports.values())}")  # fmt: skip
        cluster.wait_healthy()
        window = LogWindow(cluster.log_paths)
        command = [sys.executable, "-m", "benchmarks.etcd_api.bench", "-h", str(cluster.hostfile)]
        results = measure("etcd", command, plan, cluster.check_alive, cluster.pids)
        return results, window.lines()


def measure_paxoskv(workdir: Path, plan: Plan, system: str = "paxoskv") -> tuple[list[dict[str, Any]], list[str]]:
    """A fresh five-server cluster for ``system`` (one of PAXOSKV_PATHS), loaded on that system's path."""
    directory = workdir / system
    with LocalCluster(directory, nodes=NODES, server_args=["--log-level", "WARNING"]) as cluster:
        leader = cluster.wait_for_leader()
        cluster.wait_for_nodes()  # all five up (and done logging their start) before the load and the log window
        _say(f"{system}: 5 servers, leader {leader}, load on the {PAXOSKV_PATHS[system]} path")
        pids = [cluster.pid(name) for name in cluster.names]
        if None in pids:
            raise BenchmarkError(f"{system}: a server is not running; logs in {directory}")
        window = LogWindow([cluster.log_path(name) for name in cluster.names])
        command = [sys.executable, "-m", "paxos.bench", "-h", str(cluster.hostfile)]
        if PAXOSKV_PATHS[system] == "unary":
            command.append("--unary")
        results = measure(system, command, plan, cluster.check_alive, [pid for pid in pids if pid is not None])
        return results, window.lines()


# --------------------------------------------------------------- PySyncObj


def measure_pysyncobj(workdir: Path, plan: Plan) -> tuple[list[dict[str, Any]], list[str]]:
    """Five PySyncObj processes; the one that becomes leader runs every load and writes the results."""
    directory = workdir / "pysyncobj"
    directory.mkdir(parents=True)
    addresses = [f"127.0.0.1:{port}" for port in free_ports(NODES)]
    result_path = directory / "result.json"
    pids_path = directory / "pids.json"
    log_paths = [directory / f"pysyncobj{i}.log" for i in range(1, NODES + 1)]
    window = LogWindow(log_paths)
    children: list[_Child] = []
    try:
        for address, log_path in zip(addresses, log_paths, strict=True):
            argv = [
                sys.executable, "-m", "benchmarks.compare", "_syncobj-node",
                "--self", address,
                "--partners", ",".join(a for a in addresses if a != address),
                "--clients", ",".join(map(str, plan.clients)),
                "--seconds", str(plan.seconds),
                "--warmup", str(plan.warmup),
                "--value-size", str(plan.value_size),
                "--result", str(result_path),
                "--pids", str(pids_path),
            ]  # fmt: skip
            children.append(_spawn(log_path.stem, argv, log_path, _env()))
        # The driver sums the CPU time of all five around each run; the shim execs, so these are the nodes' pids.
        partial_pids = pids_path.with_suffix(".partial")
        partial_pids.write_text(json.dumps([child.process.pid for child in children]))
        partial_pids.rename(pids_path)
        per_run = plan.seconds + plan.warmup + 2 * SYNCOBJ_DRAIN_SECONDS
        deadline = time.monotonic() + STARTUP_SECONDS + len(plan.clients) * per_run
        while not result_path.exists():
            _check_children(children)
            if time.monotonic() >= deadline:
                for child in children:
                    child.process.send_signal(signal.SIGUSR1)  # each node dumps its threads' stacks to its log
                time.sleep(1.0)
                raise BenchmarkError(f"PySyncObj gave no result in time; stacks and logs in {directory}")
            time.sleep(POLL_SECONDS)
        results: list[dict[str, Any]] = json.loads(result_path.read_text())
        lines = window.lines()
    finally:
        _stop_children(children)
    for result in results:
        _say(f"pysyncobj set x{result['clients']}: {result['ops_per_sec']} commands/s, "
             f"p50 {result['p50_ms']} ms, CPU {result['server_cpu_us_per_op']} us/command, "
             f"errors {result['errors']}")  # fmt: skip
    return results, lines


class _Submitters:
    """N closed-loop submitters of ReplDict.set inside the leader, driven by PySyncObj's callbacks.

    Each submitter has one command in flight; its completion callback (run
    on PySyncObj's own thread) records the latency and submits the next one.
    """

    def __init__(self, store: Any, clients: int, seconds: float, value: str, seed: int) -> None:
        self.store, self.clients, self.seconds, self.value = store, clients, seconds, value
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.lock = threading.Lock()
        self.active = clients
        self.finished = threading.Event()
        self.stop_at = 0.0

    def run(self) -> tuple[Stats, float]:
        started = time.monotonic()
        self.stop_at = started + self.seconds
        for _ in range(self.clients):
            self._submit()
        if not self.finished.wait(self.seconds + SYNCOBJ_DRAIN_SECONDS):
            with self.lock:
                self.stats.errors += self.active  # still in flight at the deadline: count as failed
        return self.stats, time.monotonic() - started

    def _submit(self) -> None:
        with self.lock:
            key = f"bench-{self.rng.randrange(KEYSPACE):05d}"
        started = time.perf_counter()
        self.store.set(key, self.value, callback=lambda result, error: self._done(started, error))

    def _done(self, started: float, error: int) -> None:
        from pysyncobj import FAIL_REASON

        with self.lock:
            if error == FAIL_REASON.SUCCESS:
                self.stats.latencies.append(time.perf_counter() - started)
            else:
                self.stats.errors += 1
            self.stats.done += 1
            again = time.monotonic() < self.stop_at
            if not again:
                self.active -= 1
                if self.active == 0:
                    self.finished.set()
        if again:
            self._submit()


class _LeaderWatch:
    """This node's view of the leader: who, since when, seen with every partner connected and a quorum."""

    def __init__(self, node: Any, partners: int) -> None:
        self.node, self.partners = node, partners
        self.leader: Any = None
        self.since = time.monotonic()

    def settled_on_me(self) -> bool:
        """True when this node has been the leader for SYNCOBJ_STABLE_SECONDS."""
        status = self.node.getStatus()
        connected = sum(1 for k, v in status.items() if k.startswith("partner_node_status_server_") and v == 2)
        current = status["leader"] if connected == self.partners and status["has_quorum"] else None
        if current != self.leader:
            self.leader, self.since = current, time.monotonic()
        stable = time.monotonic() - self.since >= SYNCOBJ_STABLE_SECONDS
        return bool(stable and current is not None and current == status["self"])


def _read_pids(path: Path) -> list[int]:
    """The nodes' pids, which the coordinator writes just after starting them all."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while not path.exists():
        if time.monotonic() >= deadline:
            raise BenchmarkError(f"no list of node pids in {path} after {STARTUP_SECONDS:g}s")
        time.sleep(POLL_SECONDS)
    return [int(pid) for pid in json.loads(path.read_text())]


def syncobj_node_main(argv: Sequence[str]) -> int:
    """One PySyncObj node (``python -m benchmarks.compare _syncobj-node ...``); runs until SIGTERM."""
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare _syncobj-node")
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partners", required=True)
    parser.add_argument("--clients", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--value-size", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--pids", type=Path, required=True, help="JSON list of the five nodes' process ids")
    opts = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the coordinator asks for stacks when stuck
    partners = opts.partners.split(",")
    store = ReplDict()
    # No journalFile and no fullDumpFile: PySyncObj's default, state in memory only.
    node = SyncObj(opts.self_address, partners, conf=SyncObjConf(**SYNCOBJ_CONF), consumers=[store])
    # Leadership may move after the first election, so every node keeps
    # watching; the first one to lead for a while claims the job (O_EXCL, so
    # exactly one does), and the others stay followers until SIGTERM.
    watch = _LeaderWatch(node, len(partners))
    while not watch.settled_on_me():
        time.sleep(0.05)
    try:
        os.close(os.open(opts.result.with_suffix(".claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        signal.pause()  # another node is the driver
    node_pids = _read_pids(opts.pids)
    results = []
    value = "x" * opts.value_size
    for seed, clients in enumerate(int(c) for c in opts.clients.split(",")):
        if opts.warmup > 0:
            _Submitters(store, clients, opts.warmup, value, seed).run()
        cpu_before = total_cpu_seconds(node_pids)
        stats, elapsed = _Submitters(store, clients, opts.seconds, value, seed).run()
        cpu = total_cpu_seconds(node_pids) - cpu_before
        summary = summarize(stats, elapsed, argparse.Namespace(op="set", clients=clients, value_size=opts.value_size))
        results.append({"system": "pysyncobj", "protocol": PROTOCOL_LABELS["pysyncobj"], **summary,
                        **cpu_fields(cpu, int(summary["ops"])), "still_leader": node._isLeader()})  # fmt: skip
    partial = opts.result.with_suffix(".partial")
    partial.write_text(json.dumps(results))
    partial.rename(opts.result)  # the coordinator polls for the final name
    signal.pause()  # keep serving as a member until the coordinator sends SIGTERM
    return 0


# ------------------------------------------------------------------ report


def machine_description(workdir: Path, etcd_binary: str | None) -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    fs = subprocess.run(["df", "--output=fstype", str(workdir)], capture_output=True, text=True).stdout.split()[-1:]
    info = {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": model,
        "memory": _meminfo_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "data filesystem": f"{fs[0] if fs else 'unknown'} ({workdir.parent})",
    }
    if etcd_binary:
        info["etcd"] = etcd_version(etcd_binary)
    info["pysyncobj"] = _version("pysyncobj")
    return info


def _meminfo_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _find(results: Sequence[dict[str, Any]], system: str, op: str, clients: int) -> dict[str, Any] | None:
    return next((r for r in results if r["system"] == system and r["op"] == op and r["clients"] == clients), None)


def _ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None, key: str, unit: str) -> str:
    if not ours or not theirs or not theirs[key] or any(math.isnan(r[key]) for r in (ours, theirs)):
        return "n/a"
    return f"**{ours[key] / theirs[key]:.2f}x** ({ours[key]:g} / {theirs[key]:g} {unit})"


def ratio_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """Each paxoskv path against etcd, measure by measure, at RATIO_CLIENTS (or the largest count all ran)."""
    ours_systems = [s for s in PAXOSKV_PATHS if any(r["system"] == s for r in results)]
    etcd_counts = {r["clients"] for r in results if r["system"] == "etcd"}
    common = sorted(etcd_counts.intersection(*({r["clients"] for r in results if r["system"] == s}
                                                for s in ours_systems)))  # fmt: skip
    if not ours_systems or not common:
        return ["No ratios: paxoskv and etcd were not both measured."]
    at = RATIO_CLIENTS if RATIO_CLIENTS in common else common[-1]
    one = 1 if 1 in common else common[0]
    measures = [
        (f"writes/s at {at} clients", "set", at, "ops_per_sec", "ops/s", "at least 2x"),
        (f"write p99 at {at} clients", "set", at, "p99_ms", "ms", "at most 1x"),
        (f"linearizable reads/s at {at} clients", "get", at, "ops_per_sec", "ops/s", "at least 2x"),
        (f"write p50 at {one} client{'s' if one > 1 else ''}", "set", one, "p50_ms", "ms", "at most 1x"),
        (f"server CPU per write at {at} clients", "set", at, "server_cpu_us_per_op", "us", "below 1x"),
        (f"server CPU per read at {at} clients", "get", at, "server_cpu_us_per_op", "us", "-"),
    ]
    lines = [
        "| measure (paxoskv / etcd) | " + " | ".join(ours_systems) + " | goal |",
        "| --- | " + " | ".join("---:" for _ in ours_systems) + " | --- |",
    ]
    for label, op, clients, key, unit, goal in measures:
        theirs = _find(results, "etcd", op, clients)
        cells = [_ratio(_find(results, system, op, clients), theirs, key, unit) for system in ours_systems]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal} |")
    if at != RATIO_CLIENTS:
        lines += ["", f"({RATIO_CLIENTS} clients were not measured in this run.)"]
    return lines


def _op_label(result: dict[str, Any]) -> str:
    if result["system"] == "pysyncobj":
        return "write (in-process, no fsync)"
    return str(OP_LABELS.get(result["op"], result["op"]))


def _ms(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:g}"


def render_markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    settings = report["settings"]
    measured = [system for system in SYSTEMS if any(r["system"] == system for r in results)]
    out = [
        "# paxoskv vs etcd (and PySyncObj)",
        "",
        f"Generated {report['generated']} by `{report['command']}`.",
        "",
        *(
            ["**Quick mode: a smoke test of the tooling with short runs; do not quote these numbers.**", ""]
            if settings["quick"]
            else []
        ),
        *([settings["note"], ""] if settings.get("note") else []),
        "Closed loop: N clients in one load process (Python, grpc.aio), each with one operation in flight, "
        "all sent to the leader. Five servers on 127.0.0.1; the systems run one after another, never together, "
        "each on a fresh cluster; every run lasts "
        f"{settings['seconds']:g} s after a discarded {settings['warmup']:g} s warm-up run. Values are "
        f"{settings['value_size']} bytes; keys are {ETCD_KEY_SIZE} bytes; writes go to keys drawn uniformly from "
        f"{KEYSPACE}, reads to the {READ_KEYS} keys written before each read run, so every read returns a value. "
        "Reads are linearizable in all but PySyncObj (etcd: Range with serializable=false, i.e. ReadIndex). "
        "Writes are fsynced by etcd and paxoskv before the reply. The load process shares the CPUs with the servers.",
        "",
        "## How each system was driven",
        "",
        *(f"- **{system}**: {PROTOCOLS[system]}." for system in measured),
        "",
        "Coalescing only combines operations of different callers that are in flight at the same moment. Every "
        "client has one operation in flight and sends its next only after the reply; nothing waits for a batch "
        "to fill (there is no linger timer), so with one client every session message carries one operation, "
        "and with N clients a message carries at most N.",
        "",
        "**Server CPU per operation** is the user+system CPU time of all five server processes (every thread; "
        "`/proc/PID/stat` utime+stime, sampled every 50 ms and interpolated) over the measured run, divided by "
        "the operations completed in it. The window is the load process's own measured run: it ends when the "
        "process reports and lasts the run time it reports, so neither start-up, the warm-up run nor the keys "
        "written before a read run count. The load process's CPU is not included"
        + (" (except for PySyncObj, whose submitters run inside its leader)." if "pysyncobj" in measured else ".")
        + " /proc counts in 10 ms ticks per process, so short runs are coarse.",
        "",
        "| system | protocol | op | clients | ops/s | p50 ms | p90 ms | p99 ms | max ms | server CPU us/op | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        out.append(
            f"| {r['system']} | {r.get('protocol', PROTOCOL_LABELS.get(r['system'], '?'))} | {_op_label(r)} | "
            f"{r['clients']} | {r['ops_per_sec']:g} | {_ms(r['p50_ms'])} | {_ms(r['p90_ms'])} | {_ms(r['p99_ms'])} | "
            f"{_ms(r['max_ms'])} | {_ms(r.get('server_cpu_us_per_op', float('nan')))} | {r['errors']} |"
        )
    out += ["", "## paxoskv / etcd", "", *ratio_table(results), ""]
    if any(r["system"] == "pysyncobj" for r in results):
        out += [
            "## About the PySyncObj rows",
            "",
            "PySyncObj (Raft in Python; `SyncObjConf(appendEntriesUseBatch=False)`, otherwise its defaults) "
            "is not measured the same way and is not in the "
            "ratios: its state is in memory with **no fsync and no durability**; it has **no client RPC**, so "
            "the commands (`ReplDict.set`) are submitted **inside the leader's own process** by N closed-loop "
            "submitters (each resubmits from the completion callback); and it has **no linearizable reads**, "
            "so only writes are measured. Its numbers are replicated commands per second across five "
            "processes on loopback, an upper bound for what a client would see, and its CPU per command "
            "includes the submitters'. Batching is off because with "
            "PySyncObj's default (`appendEntriesUseBatch=True`) every command waits for the next 0.1 s "
            "append-entries round: about 100 ms p50 and 10 commands/s per submitter.",
            "",
        ]
    out += ["## Machine", ""]
    out += [f"- {key}: {value}" for key, value in report["machine"].items()]
    out += ["", "## Server log lines during the run", ""]
    for system, info in report["server_logs"].items():
        most = "; most frequent:" if info["lines"] else ""
        out.append(f"- {system}: {info['lines']} line(s) at warning level or above while under load{most}")
        out += [f"  - {m['count']}x `{m['message']}`" for m in info["top_messages"]]
    plot = "; plot: `results.png`" if settings.get("plot", True) else ""
    out += ["", f"Raw numbers: `results.json`{plot}; the method in detail: `docs/benchmarks/compare-method.md`.", ""]
    return "\n".join(out)


def render_plot(results: Sequence[dict[str, Any]], path: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    colors = {"paxoskv": "tab:blue", "paxoskv-unary": "tab:purple", "etcd": "tab:orange", "pysyncobj": "tab:green"}
    styles = {"set": "-", "get": "--"}
    fig, grid = plt.subplots(2, 2, figsize=(14, 10))
    axes = list(grid.flat)
    panels = [
        ("ops_per_sec", "throughput (ops/s)"),
        ("server_cpu_us_per_op", "servers' CPU per operation (us, all five)"),
        ("p50_ms", "p50 latency (ms)"),
        ("p99_ms", "p99 latency (ms)"),
    ]
    series = sorted({(r["system"], r["op"]) for r in results}, key=lambda s: (SYSTEMS.index(s[0]), OPS.index(s[1])))
    counts = sorted({r["clients"] for r in results})
    for ax, (key, title) in zip(axes, panels, strict=True):
        for system, op in series:
            points = sorted((r["clients"], r[key]) for r in results
                            if r["system"] == system and r["op"] == op and not math.isnan(r[key]))  # fmt: skip
            label = f"{system} {_op_label({'system': system, 'op': op})}"
            ax.plot([p[0] for p in points], [p[1] for p in points], styles[op], marker="o",
                    color=colors[system], label=label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(counts)
        ax.set_xticklabels([str(c) for c in counts])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    title = "Five servers on 127.0.0.1, closed-loop load, one operation in flight per client (log-log)"
    if quick:
        title += " - quick mode: smoke test, not a measurement"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------- command line


def _client_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated client counts like 1,8,64, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts must be positive")
    return counts


def _systems(text: str) -> tuple[str, ...]:
    systems = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise argparse.ArgumentTypeError(f"systems are {', '.join(SYSTEMS)}; got {text!r}")
    return systems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="Benchmark paxoskv against etcd (and PySyncObj) on this machine; write results.md/.json/.png.",
        epilog="Smoke test: python -m benchmarks.compare --quick --out /tmp/bench",
    )
    parser.add_argument("--seconds", type=float, help=f"length of each measured run (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--clients", type=_client_counts, help="client counts (default 1,8,64,256)")
    parser.add_argument("--warmup", type=float, help=f"discarded run before each one (default {DEFAULT_WARMUP:g})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: clients 1,8, {QUICK_SECONDS:g} s runs, {QUICK_WARMUP:g} s warm-up "
                             "(explicit options still win)")  # fmt: skip
    parser.add_argument("--value-size", type=int, default=DEFAULT_VALUE_SIZE, help="bytes per value (default 128)")
    parser.add_argument(
        "--systems", type=_systems, default=SYSTEMS, help="comma-separated subset of " + ",".join(SYSTEMS)
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks"), help="output directory (default docs/benchmarks)"
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary data directories (default: the system's)")
    parser.add_argument("--etcd", default="etcd", help="etcd binary (default: etcd on PATH)")
    parser.add_argument("--no-plot", action="store_true", help="write no results.png (and need no matplotlib)")
    parser.add_argument("--note", default="", help="a paragraph to put at the top of results.md (e.g. the conditions)")
    return parser


def _missing_prerequisite(systems: Sequence[str], etcd: str, plot: bool = True) -> str | None:
    if not Path("/proc/self/stat").exists():
        return "no /proc: the servers' CPU time is read from /proc/PID/stat, so this runs on Linux only"
    if "etcd" in systems and shutil.which(etcd) is None:
        return ETCD_INSTALL_HINT
    for module, hint in (
        ("matplotlib", "pip install matplotlib, or --no-plot"),
        ("pysyncobj", "pip install pysyncobj"),
    ):
        if module == "pysyncobj" and "pysyncobj" not in systems:
            continue
        if module == "matplotlib" and not plot:
            continue
        try:
            __import__(module)
        except ImportError:
            return f"{module} is missing: {hint}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_syncobj-node"]:
        return syncobj_node_main(args[1:])
    opts = build_parser().parse_args(args)
    quick = opts.quick
    plan = Plan(
        clients=opts.clients or (QUICK_CLIENTS if quick else DEFAULT_CLIENTS),
        seconds=opts.seconds if opts.seconds is not None else (QUICK_SECONDS if quick else DEFAULT_SECONDS),
        warmup=opts.warmup if opts.warmup is not None else (QUICK_WARMUP if quick else DEFAULT_WARMUP),
        value_size=opts.value_size,
    )
    if plan.seconds <= 0 or plan.warmup < 0 or plan.value_size < 0:
        print("error: --seconds must be positive, --warmup and --value-size not negative", file=sys.stderr)
        return 2
    problem = _missing_prerequisite(opts.systems, opts.etcd, plot=not opts.no_plot)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    etcd_binary = shutil.which(opts.etcd) if "etcd" in opts.systems else None
    results: list[dict[str, Any]] = []
    logs: dict[str, list[str]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="paxoskv-compare-", dir=opts.workdir))
    try:
        machine = machine_description(workdir, etcd_binary)
        if etcd_binary:
            logs["etcd"] = _collect(measure_etcd(workdir, etcd_binary, plan), results)
        for system in PAXOSKV_PATHS:
            if system in opts.systems:
                logs[system] = _collect(measure_paxoskv(workdir, plan, system), results)
        if "pysyncobj" in opts.systems:
            logs["pysyncobj"] = _collect(measure_pysyncobj(workdir, plan), results)
    except (BenchmarkError, ClusterError, ProcessCpuError, OSError) as exc:
        print(f"error: {exc}\n(data and logs kept in {workdir}; no results written)", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Terminated):
        print("interrupted: every cluster was stopped; no results written", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "benchmarks.compare", *args]),
        "settings": {
            **plan.__dict__,
            "quick": opts.quick,
            "etcd_key_size": ETCD_KEY_SIZE,
            "nodes": NODES,
            "plot": not opts.no_plot,
            "note": opts.note,
        },
        "protocols": {system: PROTOCOLS[system] for system in SYSTEMS if system in opts.systems},
        "machine": machine,
        "results": results,
        "server_logs": {system: summarize_logs(lines) for system, lines in logs.items()},
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (opts.out / "results.md").write_text(render_markdown(report))
    if not opts.no_plot:
        render_plot(results, opts.out / "results.png", opts.quick)
    print(render_markdown(report))
    _say(f"wrote {opts.out}/results.md, results.json" + ("" if opts.no_plot else " and results.png"))
    return 0


def _collect(measured: tuple[list[dict[str, Any]], list[str]], results: list[dict[str, Any]]) -> list[str]:
    results.extend(measured[0])
    return measured[1]


if __name__ == "__main__":
    sys.exit(main())
