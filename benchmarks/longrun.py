"""Long run: does a cluster stay bounded in memory and disk, and quick to restart, over a million writes?

    python -m benchmarks.longrun [--commands 1000000] [--every 100000] [--nodes 5] [--clients 64]
                                 [--keys 10000] [--value-bytes 100] [--snapshot-every N] [--dir DIR]
                                 [--csv FILE] [--plot FILE.svg] [-- SERVER_ARGS ...]

Starts a local cluster (``tools.localcluster.LocalCluster``) and writes to it with
closed-loop clients (the load generator's, ``tools.bench``), each with one
write in flight, to keys drawn uniformly from ``--keys``, with values of
``--value-bytes``.  Every ``--every`` successful writes it prints a row:
writes so far, elapsed time, the write rate since the last row, and for each
server its resident memory (VmRSS), the bytes in its data directory, its log
bytes and its newest snapshot's index (from Status).  Then, with the load
still running, it SIGKILLs one follower (a different one each row), starts
it again, and times how long the restarted server takes to apply everything
the leader had applied right after the restart command.

Between rows each server's RSS and data directory are also sampled every
second, and each row keeps their peaks since the previous row: a data
directory is a sawtooth (the log grows until the next snapshot, then the
segments below it go), so a single sample per row could land anywhere on the
tooth.  The load keeps running until the last row is measured, so slightly
more than ``--commands`` writes are made.  At the end it prints a Markdown
summary and checks the criteria: every server's peak memory and peak data
directory in the last interval within 2x of its peaks in the interval up to
``--baseline-at`` writes (the first row at or after it), and every restart
caught up within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks.svgplot import Panel, panels_svg
from paxos.common.hostfile import Member, parse_hostfile
from paxos.common.limits import DEFAULT_MAX_VALUE_BYTES
from protos import kv_pb2, kv_pb2_grpc
from tools import bench
from tools.local import split_server_args
from tools.localcluster import ClusterError, LocalCluster

DEFAULT_COMMANDS = 1_000_000
DEFAULT_EVERY = 100_000
DEFAULT_NODES = 5
DEFAULT_CLIENTS = 64
DEFAULT_KEYS = 10_000
DEFAULT_VALUE_BYTES = 100
BASELINE_COMMANDS = 100_000
# The criteria: growth from the baseline row to the last, and the slowest restart.
MAX_GROWTH = 2.0
MAX_RESTART_SECONDS = 5.0
# A restarted server that has not caught up after this long is reported as not caught up.
CATCH_UP_DEADLINE_SECONDS = 120.0
# The run is abandoned when no write succeeds for this long.
STALL_SECONDS = 120.0
LEADER_TIMEOUT_SECONDS = 60.0
STATUS_TIMEOUT_SECONDS = 1.0
STATUS_POLL_SECONDS = 0.02
PROGRESS_POLL_SECONDS = 0.1
# Between rows the RSS and data directory of every server are sampled this often, for their peaks.
SIZE_SAMPLE_SECONDS = 1.0
# The load's clients finish their write in flight before the run ends.
LOAD_STOP_SECONDS = bench.OP_SECONDS + 5.0
# The status probe reconnects to a restarted server quickly: gRPC's default backoff
# (one second, growing) would be counted as restart time.
_PROBE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 50),
]
MB = 1_000_000

EXIT_PASS, EXIT_FAIL, EXIT_RUN_FAILED = 0, 1, 3  # and 2 for bad usage, from argparse


# ------------------------------------------------------------------ the load


class WriteLoad:
    """Closed-loop writers on their own event loop in a background thread.

    ``written`` and ``errors`` are read by the measuring thread while the
    writers run; plain ints updated from one thread, so reads are consistent
    enough for progress.  The writers run until ``stop()``.
    """

    def __init__(self, members: list[Member], clients: int, keys: int, value_bytes: int, seed: int) -> None:
        self.members = members
        self.clients = clients
        self.keys = keys
        self.value_bytes = value_bytes
        self.seed = seed
        self.written = 0
        self.errors = 0
        self.started_at = 0.0
        self.last_write_at = 0.0
        self.failure: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="longrun write load", daemon=True)

    def start(self) -> None:
        self.started_at = self.last_write_at = time.monotonic()
        self._thread.start()

    def stop(self) -> bool:
        """Ask the writers to stop and wait for them; False if they did not stop in time."""
        self._stopping = True
        self._thread.join(LOAD_STOP_SECONDS)
        return not self._thread.is_alive()

    def _run(self) -> None:
        loop = _new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by the measuring thread, which owns the exit
            self.failure = exc
        finally:
            loop.close()

    async def _main(self) -> None:
        # The load generator's default path: one library client whose session
        # streams all the writers share.
        target = bench.SessionTarget(self.members)
        rng = random.Random(self.seed)
        try:
            await asyncio.gather(*(self._writer(target, n, random.Random(rng.random())) for n in range(self.clients)))
        finally:
            await target.close()

    async def _writer(self, target: bench.SessionTarget, number: int, rng: random.Random) -> None:
        one_op = target.client()
        seq = 0
        while not self._stopping:
            seq += 1
            key = bench.bench_key(rng.randrange(self.keys))
            value = f"{number}:{seq}:".ljust(self.value_bytes, "x")[: self.value_bytes]
            # One write as the load generator makes it: following the leader, retrying within its deadline.
            if await one_op("set", key, value):
                self.written += 1
                self.last_write_at = time.monotonic()
            else:
                self.errors += 1


def _new_event_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("PAXOSKV_BENCH_UVLOOP", "1") == "1":
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


# ------------------------------------------------------------- measurements


@dataclass
class ServerSample:
    rss_bytes: int | None  # None: no /proc (not Linux) or the server was not running
    data_bytes: int
    log_bytes: int | None  # None: the server did not answer Status
    snapshot_index: int | None
    applied_index: int | None
    # The largest values sampled since the previous row, this one included.
    rss_peak_bytes: int | None = None
    data_peak_bytes: int = 0


@dataclass
class Restart:
    server: str
    answering_seconds: float | None  # restart command to the first Status answer
    catch_up_seconds: float | None  # restart command to applied_index >= the leader's; None: deadline passed
    target_index: int


@dataclass
class Row:
    commands: int
    elapsed_seconds: float
    write_rate: float  # writes/s since the previous row
    servers: dict[str, ServerSample] = field(default_factory=dict)
    leader: str = ""  # the leader a majority named when the follower was killed
    restart: Restart | None = None


class StatusProbe:
    """Status of one server at a time, each on its own channel with a short reconnect backoff."""

    def __init__(self, members: list[Member]) -> None:
        self._channels = {m.name: grpc.insecure_channel(m.address, options=_PROBE_CHANNEL_OPTIONS) for m in members}
        self._stubs = {name: kv_pb2_grpc.KVStub(channel) for name, channel in self._channels.items()}

    def status(self, name: str) -> kv_pb2.NodeStatus | None:
        try:
            reply: kv_pb2.NodeStatus = self._stubs[name].Status(kv_pb2.StatusRequest(), timeout=STATUS_TIMEOUT_SECONDS)
            return reply
        except grpc.RpcError:
            return None

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def resident_bytes(pid: int | None) -> int | None:
    """VmRSS of a process from /proc, or None when there is none to read."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def directory_bytes(path: Path) -> int:
    """Bytes in the files under ``path``; files removed while walking (compaction) are skipped."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


class PeakSizes:
    """The largest RSS and data directory of each server since the last ``take``, sampled between rows.

    A data directory is a sawtooth: the log grows until the next snapshot,
    then the segments below it go.  One sample per row lands anywhere on the
    tooth, so two rows can differ by a whole snapshot interval's log with no
    growth at all; the peak over the interval before a row does not.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.rss: dict[str, int] = {}
        self.data: dict[str, int] = {}
        self.next_sample_at = 0.0

    def add(self, name: str, rss_bytes: int | None, data_bytes: int) -> None:
        if rss_bytes is not None:
            self.rss[name] = max(self.rss.get(name, 0), rss_bytes)
        self.data[name] = max(self.data.get(name, 0), data_bytes)

    def sample_if_due(self) -> None:
        now = time.monotonic()
        if now < self.next_sample_at:
            return
        self.next_sample_at = now + SIZE_SAMPLE_SECONDS
        for name in self.cluster.names:
            self.add(name, resident_bytes(self.cluster.pid(name)), directory_bytes(self.cluster.data_dir(name)))

    def take(self, name: str) -> tuple[int | None, int]:
        """The peaks of one server, forgotten afterwards."""
        return self.rss.pop(name, None), self.data.pop(name, 0)


def sample_server(cluster: LocalCluster, probe: StatusProbe, peaks: PeakSizes, name: str) -> ServerSample:
    reply = probe.status(name)
    rss, data = resident_bytes(cluster.pid(name)), directory_bytes(cluster.data_dir(name))
    peaks.add(name, rss, data)
    rss_peak, data_peak = peaks.take(name)
    return ServerSample(
        rss_bytes=rss,
        data_bytes=data,
        log_bytes=reply.log_bytes if reply else None,
        snapshot_index=reply.snapshot_index if reply else None,
        applied_index=reply.applied_index if reply else None,
        rss_peak_bytes=rss_peak,
        data_peak_bytes=data_peak,
    )


def next_victim(names: Sequence[str], leader: str, previous: str | None) -> str:
    """The follower to kill next: the first server after ``previous`` in hostfile order that is not the leader.

    Counting from the last victim, not by turn, keeps the rotation fair when
    the leadership moves between rows.
    """
    start = names.index(previous) + 1 if previous in names else 0
    rotation = [*names[start:], *names[:start]]
    return next(name for name in rotation if name != leader)


def restart_follower(cluster: LocalCluster, probe: StatusProbe, leader: str, victim: str) -> Restart:
    """SIGKILL ``victim``, start it again, and time its catch-up to the leader's applied index."""
    cluster.kill(victim, signal.SIGKILL)
    restarted_at = time.monotonic()
    cluster.start_node(victim)
    deadline = restarted_at + CATCH_UP_DEADLINE_SECONDS
    target: int | None = None
    while target is None and time.monotonic() < deadline:
        reply = probe.status(leader)
        if reply is not None:
            target = reply.applied_index
        else:
            time.sleep(STATUS_POLL_SECONDS)
    if target is None:
        return Restart(victim, None, None, 0)
    answering: float | None = None
    while time.monotonic() < deadline:
        cluster.check_alive()
        reply = probe.status(victim)
        now = time.monotonic()
        if reply is not None:
            if answering is None:
                answering = now - restarted_at
            if reply.applied_index >= target:
                return Restart(victim, answering, now - restarted_at, target)
        time.sleep(STATUS_POLL_SECONDS)
    return Restart(victim, answering, None, target)


class RunFailed(Exception):
    """The run could not go on (a server exited, writes stalled, no leader); the message says why."""


def wait_for_writes(cluster: LocalCluster, load: WriteLoad, peaks: PeakSizes, count: int) -> None:
    """Poll until ``count`` writes succeeded, sampling sizes for their peaks.

    RunFailed if a server exits, the load dies or writes stall.
    """
    while load.written < count:
        cluster.check_alive()
        peaks.sample_if_due()
        if load.failure is not None:
            raise RunFailed(f"the write load failed: {load.failure!r}")
        stalled = time.monotonic() - load.last_write_at
        if stalled > STALL_SECONDS:
            raise RunFailed(f"no write succeeded for {stalled:.0f} s at {load.written} writes ({load.errors} errors)")
        time.sleep(PROGRESS_POLL_SECONDS)


def measure_row(
    cluster: LocalCluster, probe: StatusProbe, load: WriteLoad, peaks: PeakSizes, previous: Row | None
) -> Row:
    commands, now = load.written, time.monotonic()
    elapsed = now - load.started_at
    since_commands = commands - (previous.commands if previous else 0)
    since_seconds = elapsed - (previous.elapsed_seconds if previous else 0.0)
    row = Row(commands, elapsed, since_commands / since_seconds if since_seconds > 0 else 0.0)
    row.servers = {name: sample_server(cluster, probe, peaks, name) for name in cluster.names}
    if len(cluster.names) > 1:
        row.leader = cluster.wait_for_leader(LEADER_TIMEOUT_SECONDS)
        last_victim = previous.restart.server if previous and previous.restart else None
        row.restart = restart_follower(cluster, probe, row.leader, next_victim(cluster.names, row.leader, last_victim))
    return row


# ---------------------------------------------------------------- reporting


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_row(row: Row) -> str:
    servers = " | ".join(
        f"{name} rss {_mb(s.rss_bytes)} MB (peak {_mb(s.rss_peak_bytes)}) data {_mb(s.data_bytes)} MB "
        f"(peak {_mb(s.data_peak_bytes)}) log {_mb(s.log_bytes)} MB "
        f"snap {_number(s.snapshot_index)}"
        for name, s in row.servers.items()
    )
    restart = "restart: none (one server)"
    if row.restart is not None:
        r = row.restart
        caught_up = f"{r.catch_up_seconds:.2f} s" if r.catch_up_seconds is not None else "not caught up"
        answering = _seconds(r.answering_seconds)
        restart = f"leader {row.leader}, restart {r.server}: answering {answering} s, caught up {caught_up}"
    return (
        f"row: {row.commands} writes, {row.elapsed_seconds:.1f} s, {row.write_rate:.0f} writes/s | {servers} | "
        f"{restart}"
    )


def _spread(values: Sequence[int | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    low, high = min(known), max(known)
    return f"{low / MB:.1f}" if low == high else f"{low / MB:.1f}-{high / MB:.1f}"


def summary_table(rows: Sequence[Row]) -> str:
    """One line per row; sizes as the range over the servers, peaks since the previous row."""
    lines = [
        "| writes | elapsed s | writes/s | RSS MB | data dir MB | data dir peak MB | log MB | snapshot index "
        "| leader | restarted | "
        "answering s | caught up s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |",
    ]
    for row in rows:
        samples = list(row.servers.values())
        snaps = [x.snapshot_index for x in samples if x.snapshot_index is not None]
        restart = row.restart
        cells = [
            str(row.commands),
            f"{row.elapsed_seconds:.1f}",
            f"{row.write_rate:.0f}",
            _spread([x.rss_bytes for x in samples]),
            _spread([x.data_bytes for x in samples]),
            _spread([x.data_peak_bytes for x in samples]),
            _spread([x.log_bytes for x in samples]),
            f"{min(snaps)}-{max(snaps)}" if snaps else "-",
            row.leader or "-",
            restart.server if restart else "-",
            _seconds(restart.answering_seconds if restart else None),
            _seconds(restart.catch_up_seconds if restart else None),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def baseline_row(rows: Sequence[Row], at: int) -> Row:
    """The first row at or after ``at`` writes; the first row when the run is shorter."""
    return next((row for row in rows if row.commands >= at), rows[0])


def growth_table(base: Row, last: Row) -> str:
    """Each server's peaks in the interval before the baseline row and before the last row."""
    lines = [
        f"| server | peak RSS MB to {base.commands} | peak RSS MB to {last.commands} | ratio "
        f"| peak data dir MB to {base.commands} | peak data dir MB to {last.commands} | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, end in last.servers.items():
        start = base.servers[name]
        cells = [
            name,
            _mb(start.rss_peak_bytes),
            _mb(end.rss_peak_bytes),
            _ratio_text(start.rss_peak_bytes, end.rss_peak_bytes),
            _mb(start.data_peak_bytes),
            _mb(end.data_peak_bytes),
            _ratio_text(start.data_peak_bytes, end.data_peak_bytes),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _ratio(start: int | None, end: int | None) -> float | None:
    if start is None or end is None or start <= 0:
        return None
    return end / start


def _ratio_text(start: int | None, end: int | None) -> str:
    ratio = _ratio(start, end)
    return "-" if ratio is None else f"{ratio:.2f}x"


@dataclass
class Verdict:
    passed: bool
    text: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.text}"


def _growth_verdict(what: str, base: Row, last: Row, attribute: str) -> Verdict:
    ratios: dict[str, float | None] = {
        name: _ratio(getattr(base.servers[name], attribute), getattr(sample, attribute))
        for name, sample in last.servers.items()
    }
    unknown = sorted(name for name, ratio in ratios.items() if ratio is None)
    known = {name: ratio for name, ratio in ratios.items() if ratio is not None}
    claim = (
        f"{what}: every server's peak in the last interval (to {last.commands} writes) within {MAX_GROWTH:g}x "
        f"of its peak in the interval to {base.commands} writes"
    )
    if unknown:
        return Verdict(False, f"{claim} (not measured on {', '.join(unknown)})")
    worst = max(known, key=lambda name: known[name])
    return Verdict(known[worst] <= MAX_GROWTH, f"{claim} (largest: {worst} {known[worst]:.2f}x)")


def verdicts(rows: Sequence[Row], baseline_at: int) -> list[Verdict]:
    base, last = baseline_row(rows, baseline_at), rows[-1]
    results = [
        _growth_verdict("memory (RSS)", base, last, "rss_peak_bytes"),
        _growth_verdict("disk (data dir)", base, last, "data_peak_bytes"),
    ]
    restarts = [row.restart for row in rows if row.restart is not None]
    claim = f"restarts: every killed follower caught up within {MAX_RESTART_SECONDS:g} s"
    if not restarts:
        results.append(Verdict(False, f"{claim} (none measured: a one-server cluster)"))
        return results
    slow = [r for r in restarts if r.catch_up_seconds is None or r.catch_up_seconds >= MAX_RESTART_SECONDS]
    timed = [r for r in restarts if r.catch_up_seconds is not None]
    slowest = max(timed, key=lambda r: r.catch_up_seconds or 0.0) if timed else None
    detail = f"{len(restarts)} restarts"
    if slowest is not None:
        detail += f", slowest {slowest.server} {slowest.catch_up_seconds:.2f} s"
    missed = len(restarts) - len(timed)
    if missed:
        detail += f", {missed} not caught up within {CATCH_UP_DEADLINE_SECONDS:g} s"
    results.append(Verdict(not slow, f"{claim} ({detail})"))
    return results


CSV_ROW_FIELDS = [
    "writes",
    "elapsed_s",
    "writes_per_s",
    "leader",
    "restarted",
    "answering_s",
    "caught_up_s",
    "target_index",
]
CSV_SERVER_FIELDS = [
    "rss_bytes",
    "rss_peak_bytes",
    "data_bytes",
    "data_peak_bytes",
    "log_bytes",
    "snapshot_index",
    "applied_index",
]


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    names = list(rows[0].servers) if rows else []
    header = CSV_ROW_FIELDS + [f"{name}_{f}" for name in names for f in CSV_SERVER_FIELDS]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            r = row.restart
            values: list[object] = [
                row.commands,
                round(row.elapsed_seconds, 3),
                round(row.write_rate, 1),
                row.leader,
                r.server if r else "",
                "" if r is None or r.answering_seconds is None else round(r.answering_seconds, 3),
                "" if r is None or r.catch_up_seconds is None else round(r.catch_up_seconds, 3),
                r.target_index if r else "",
            ]
            for name in names:
                sample = row.servers[name]
                values += ["" if getattr(sample, f) is None else getattr(sample, f) for f in CSV_SERVER_FIELDS]
            writer.writerow(values)


def plot_svg(rows: Sequence[Row], title: str) -> str:
    names = list(rows[0].servers) if rows else []

    def series(attribute: str) -> dict[str, list[tuple[float, float]]]:
        return {
            name: [
                (row.commands, value / MB)
                for row in rows
                if (value := getattr(row.servers[name], attribute)) is not None
            ]
            for name in names
        }

    restarts = [
        (float(row.commands), row.restart.catch_up_seconds)
        for row in rows
        if row.restart is not None and row.restart.catch_up_seconds is not None
    ]
    panels = [
        Panel("resident memory (VmRSS), MB: peak since the previous point", series("rss_peak_bytes")),
        Panel("data directory, MB: peak since the previous point", series("data_peak_bytes")),
        Panel(
            "killed follower: restart to caught up, s",
            {"restart": restarts},
            limit=MAX_RESTART_SECONDS,
            limit_label=f"{MAX_RESTART_SECONDS:g} s",
        ),
    ]
    return panels_svg(title, "writes", panels)


# -------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.longrun",
        usage="%(prog)s [options] [-- SERVER_ARGS ...]",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Anything after '--' is passed to every server.\n"
            "Example, a shorter run:\n"
            "  python -m benchmarks.longrun --commands 200000 --every 50000 --csv run.csv --plot run.svg\n"
            "Exit codes: 0 every criterion holds, 1 one does not (see the FAIL lines), 2 bad usage,\n"
            "3 the run could not finish (a server exited, writes stalled, no leader)."
        ),
    )
    parser.add_argument(
        "--commands",
        type=int,
        default=DEFAULT_COMMANDS,
        metavar="N",
        help=f"successful writes to make (default {DEFAULT_COMMANDS})",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=DEFAULT_EVERY,
        metavar="N",
        help=f"print a row and restart a follower every N writes (default {DEFAULT_EVERY})",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=DEFAULT_NODES,
        metavar="N",
        help=f"servers in the cluster (default {DEFAULT_NODES})",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=DEFAULT_CLIENTS,
        metavar="N",
        help=f"concurrent closed-loop writers (default {DEFAULT_CLIENTS})",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=DEFAULT_KEYS,
        metavar="N",
        help=f"distinct keys written, uniformly (default {DEFAULT_KEYS})",
    )
    parser.add_argument(
        "--value-bytes",
        type=int,
        default=DEFAULT_VALUE_BYTES,
        metavar="N",
        help=f"bytes per value (default {DEFAULT_VALUE_BYTES})",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        metavar="N",
        help="passed to the servers: snapshot every N applied commands (default: theirs)",
    )
    parser.add_argument(
        "--baseline-at",
        type=int,
        default=BASELINE_COMMANDS,
        metavar="N",
        help="compare the end with the first row at or after N writes "
        f"(default {BASELINE_COMMANDS}; the first row if the run is shorter)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the key choice (default 0)")
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="cluster directory, kept afterwards; must be new or empty (default: a temporary one)",
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the rows to FILE as CSV")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.svg", help="draw RSS, data dir MB and restart seconds against writes as SVG"
    )
    return parser


def _check_options(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    for name in ("commands", "every", "nodes", "clients", "keys", "value_bytes"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if opts.every > opts.commands:
        parser.error("--every must not exceed --commands")
    if opts.value_bytes > DEFAULT_MAX_VALUE_BYTES:
        parser.error(f"--value-bytes must be at most {DEFAULT_MAX_VALUE_BYTES} (the servers' default limit)")
    if opts.snapshot_every is not None and opts.snapshot_every < 1:
        parser.error("--snapshot-every must be at least 1")
    if opts.dir is not None and opts.dir.exists() and (not opts.dir.is_dir() or any(opts.dir.iterdir())):
        parser.error(f"{opts.dir} is not an empty directory: old data would skew the sizes; pick a new --dir")


def run(opts: argparse.Namespace, directory: Path, server_args: list[str], rows: list[Row]) -> tuple[int, int]:
    """Append a row per checkpoint to ``rows``; total and failed writes.

    Raises RunFailed or ClusterError when the run cannot finish; ``rows`` then
    holds what was measured before.
    """
    args = [*(["--snapshot-every", str(opts.snapshot_every)] if opts.snapshot_every else []), *server_args]
    with LocalCluster(directory, nodes=opts.nodes, server_args=args) as cluster:
        cluster.wait_for_leader(LEADER_TIMEOUT_SECONDS)
        members = parse_hostfile(cluster.hostfile)
        probe = StatusProbe(members)
        load = WriteLoad(members, opts.clients, opts.keys, opts.value_bytes, opts.seed)
        load.start()
        try:
            checkpoints = list(range(opts.every, opts.commands + 1, opts.every))
            if checkpoints[-1] != opts.commands:
                checkpoints.append(opts.commands)
            peaks = PeakSizes(cluster)
            for checkpoint in checkpoints:
                wait_for_writes(cluster, load, peaks, checkpoint)
                row = measure_row(cluster, probe, load, peaks, rows[-1] if rows else None)
                rows.append(row)
                print(format_row(row), flush=True)
        finally:
            if not load.stop():
                print("warning: the writers did not stop in time", file=sys.stderr)
            probe.close()
        return load.written, load.errors


def main(argv: Sequence[str] | None = None) -> int:
    own, server_args = split_server_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    opts = parser.parse_args(own)
    _check_options(parser, opts)
    print(
        f"longrun: {opts.nodes} servers, {opts.clients} clients, {opts.commands} writes over {opts.keys} keys "
        f"of {opts.value_bytes} bytes, a row and a follower restart every {opts.every} writes",
        flush=True,
    )
    started = time.monotonic()
    rows: list[Row] = []
    failure: str | None = None
    written = errors = 0
    try:
        if opts.dir is not None:
            written, errors = run(opts, opts.dir, server_args, rows)
        else:
            with tempfile.TemporaryDirectory(prefix="paxoskv-longrun-") as tmp:
                written, errors = run(opts, Path(tmp) / "cluster", server_args, rows)
    except (RunFailed, ClusterError) as exc:
        failure = str(exc)
    if rows:
        report(opts, rows, written, errors, time.monotonic() - started)
    if failure is not None:
        print(f"error: the run stopped after {len(rows)} rows: {failure}", file=sys.stderr)
        if opts.dir is None:
            print("(run with --dir DIR to keep the servers' logs)", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_PASS if all(v.passed for v in verdicts(rows, opts.baseline_at)) else EXIT_FAIL


def report(opts: argparse.Namespace, rows: list[Row], written: int, errors: int, elapsed: float) -> None:
    """Print the summary and the verdicts; write the CSV and the plot if asked."""
    if written:
        print(f"\n{written} writes ({errors} failed) in {elapsed:.0f} s including start-up and restarts")
    print()
    print(summary_table(rows))
    base = baseline_row(rows, opts.baseline_at)
    print(f"\nGrowth from {base.commands} to {rows[-1].commands} writes:\n")
    print(growth_table(base, rows[-1]))
    print()
    for verdict in verdicts(rows, opts.baseline_at):
        print(verdict.line())
    if opts.csv is not None:
        write_csv(opts.csv, rows)
    if opts.plot is not None:
        title = f"paxoskv long run: {opts.nodes} servers, {opts.clients} clients, {opts.keys} keys"
        opts.plot.write_text(plot_svg(rows, title), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
