"""Closed-loop load generator: ``python -m paxos.bench -h HOSTFILE ...``.

N clients in one process (one asyncio loop), each with one operation in
flight, each timing its own operations.  By default they share one
``AsyncKVClient``, the library's session path: operations of different
clients that are in flight at the same moment travel together in one
message per server.  ``--unary`` makes one gRPC call per operation instead
(one channel per server), the way etcd's own benchmark tool counts.
Writes go in a registered session, with sequence numbers, like the library's; reads are
linearizable.  An operation finds the leader and retries as the library
does (``client.retry``, with longer attempts for a loaded cluster, within
``OP_SECONDS``); one that fails counts as an error.  Prints ops/s, latency
percentiles and errors; ``--json`` makes the last line a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from tqdm import tqdm

from client.aio import AsyncKVClient
from client.attempts import Attempted, with_retry
from client.errors import InvalidRequest, KVError
from client.outcomes import classify
from client.retry import SECONDS, Attempt, KnownLeader, Retry
from paxos.common.hostfile import HostfileError, Member, parse_hostfile
from paxos.common.tlsfiles import TLS_DIR_ENV, TlsError, client_credentials, find_tls_dir
from protos import kv_pb2, kv_pb2_grpc

KEYSPACE = 10_000
# Reads go to keys that were written first, so every read returns a value.
READ_KEYS = 256


def bench_key(n: int) -> str:
    """16-byte keys, as in the etcd comparison."""
    return f"bench-{n:010d}"


# Under load a reply takes longer than the library's one-second attempt allows.
ATTEMPT_SECONDS = 2.0
# One operation gives up (and counts as an error) after this long.
OP_SECONDS = 10.0
TIMING = replace(SECONDS, attempt=ATTEMPT_SECONDS)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    done: int = 0


class SessionTarget:
    """One library client, shared by all the load generator's clients (the session path)."""

    def __init__(self, members: list[Member], tls_dir: str | Path | None = None) -> None:
        self.kv = AsyncKVClient(members, timeout=OP_SECONDS, timing=TIMING, tls_dir=tls_dir)

    def client(self) -> Callable[[str, str, str], Awaitable[bool]]:
        """One load generator client's operations: the shared library client numbers the writes."""
        return self.one_op

    async def one_op(self, op: str, key: str, value: str) -> bool:
        """One operation through the library; True when it succeeded."""
        try:
            if op == "set":
                await self.kv.set(key, value)
            else:
                await self.kv.get(key)
        except KVError:
            return False
        return True

    async def close(self) -> None:
        await self.kv.close()


class Target:
    """Stubs for every server and the known leader, shared by clients (the unary path)."""

    def __init__(self, members: list[Member], credentials: grpc.ChannelCredentials | None = None) -> None:
        self.members = members
        self.names = [m.name for m in members]
        self.channels = {
            m.name: grpc.aio.insecure_channel(m.address)
            if credentials is None
            else grpc.aio.secure_channel(m.address, credentials)
            for m in members
        }
        self.stubs = {name: kv_pb2_grpc.KVStub(ch) for name, ch in self.channels.items()}
        self.leader: KnownLeader[str] = KnownLeader()

    def client(self) -> Callable[[str, str, str], Awaitable[bool]]:
        """One load generator client's operations, its writes numbered in a client session of its own.

        The session is registered before the client's first write, and again
        after one expired.  Each client has one write in flight, so every
        write acknowledges all of its client's earlier ones (first_unacked = seq).
        """
        session: list[int] = []  # the registered session, once there is one
        seqs = itertools.count(1)

        async def one_op(op: str, key: str, value: str) -> bool:
            if op == "set" and not session:
                registered = await _register(self)
                if registered is None:
                    return False
                session.append(registered)
            ok, expired = await _one_op(self, op, key, value, session[0] if session else 0, next(seqs))
            if expired:
                session.clear()
            return ok

        return one_op

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def _register(target: Target) -> int | None:
    """A new session, registered at the leader as the library does; None if the cluster did not answer in time."""
    retry = Retry(target.names, target.leader, time.monotonic(), OP_SECONDS, TIMING, write=False)

    async def attempt(at: Attempt[str, float]) -> Attempted[int | None]:
        try:
            reply = await target.stubs[at.server].Register(kv_pb2.RegisterRequest(), timeout=at.timeout)
        except grpc.RpcError as err:
            return Attempted(*classify(err))
        return Attempted(*classify(reply), reply.session_id)

    return await with_retry(retry, attempt, leader_named=_named, clock=time.monotonic, give_up=lambda: None)


async def _one_op(target: Target, op: str, key: str, value: str, session: int, seq: int) -> tuple[bool, bool]:
    """One operation, following the leader and retrying like the library: whether it succeeded, and
    whether its session expired."""
    retry = Retry(target.names, target.leader, time.monotonic(), OP_SECONDS, TIMING, write=op == "set")

    async def attempt(at: Attempt[str, float]) -> Attempted[tuple[bool, bool]]:
        stub = target.stubs[at.server]
        result: kv_pb2.WriteReply | kv_pb2.GetReply | grpc.RpcError
        try:
            if op == "set":
                cmd = kv_pb2.Command(
                    session_id=session, seq=seq, first_unacked=seq, set=kv_pb2.SetOp(key=key, value=value)
                )
                result = await stub.Write(kv_pb2.WriteRequest(command=cmd), timeout=at.timeout)
            else:
                result = await stub.Get(kv_pb2.GetRequest(key=key), timeout=at.timeout)
        except grpc.RpcError as err:
            result = err
        return Attempted(*classify(result), (True, False))

    try:
        return await with_retry(
            retry, attempt, leader_named=_named, clock=time.monotonic, give_up=lambda: (False, retry.session_expired)
        )
    except InvalidRequest:
        return False, False  # refused as invalid: a bug in this tool, counted as an error


def _named(hint: str) -> str:
    """The server a leader hint names: the load generator names servers as the replies do."""
    return hint


async def _client(
    target: Target | SessionTarget, opts: argparse.Namespace, stop_at: float, stats: Stats, rng: random.Random
) -> None:
    value = "x" * opts.value_size
    one_op = target.client()
    while time.monotonic() < stop_at:
        op = opts.op if opts.op != "mixed" else ("set" if rng.random() < 0.5 else "get")
        key = bench_key(rng.randrange(KEYSPACE) if op == "set" else rng.randrange(READ_KEYS))
        started = time.perf_counter()
        ok = await one_op(op, key, value)
        if ok:
            stats.latencies.append(time.perf_counter() - started)
        else:
            stats.errors += 1
        stats.done += 1


async def _progress(stats: Stats, seconds: float, stop_at: float) -> None:
    with tqdm(total=round(seconds), unit="s", disable=not sys.stderr.isatty(), leave=False) as bar:
        last = 0
        while time.monotonic() < stop_at:
            await asyncio.sleep(1)
            bar.update(1)
            bar.set_postfix(ops_per_s=stats.done - last, errors=stats.errors)
            last = stats.done


async def run(
    members: list[Member], opts: argparse.Namespace, tls_dir: str | Path | None = None
) -> dict[str, float | int | str]:
    """One load run; TLS with ``tls_dir`` (its ca.pem and client.pem), on the session path or, with
    ``opts.unary``, one call per operation."""
    if opts.unary:
        target: Target | SessionTarget = Target(members, client_credentials(tls_dir) if tls_dir else None)
    else:
        target = SessionTarget(members, tls_dir)
    rng = random.Random(opts.seed)
    if opts.op in ("get", "mixed"):
        await _preload(target, opts)
    stats = Stats()
    started = time.monotonic()
    stop_at = started + opts.seconds
    clients = [_client(target, opts, stop_at, stats, random.Random(rng.random())) for _ in range(opts.clients)]
    await asyncio.gather(_progress(stats, opts.seconds, stop_at), *clients)
    elapsed = time.monotonic() - started
    await target.close()
    return {**summarize(stats, elapsed, opts), "path": "unary" if opts.unary else "session", "tls": tls_dir is not None}


async def _preload(target: Target | SessionTarget, opts: argparse.Namespace) -> None:
    """Give the keys a value first so that reads return data."""
    value = "x" * opts.value_size
    one_op = target.client()
    for n in range(READ_KEYS):
        await one_op("set", bench_key(n), value)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(stats: Stats, elapsed: float, opts: argparse.Namespace) -> dict[str, float | int | str]:
    lat = sorted(stats.latencies)
    return {
        "op": opts.op,
        "clients": opts.clients,
        "seconds": round(elapsed, 3),
        "value_size": opts.value_size,
        "ops": len(lat),
        "ops_per_sec": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(_percentile(lat, 0.50) * 1000, 3),
        "p90_ms": round(_percentile(lat, 0.90) * 1000, 3),
        "p99_ms": round(_percentile(lat, 0.99) * 1000, 3),
        "max_ms": round(lat[-1] * 1000, 3) if lat else float("nan"),
        "errors": stats.errors,
    }


def report(result: dict[str, float | int | str], as_json: bool) -> int:
    """Print a run's summary; the exit code (3 when nothing succeeded)."""
    path = f" ({result['path']})" if "path" in result else ""
    if as_json:
        print(json.dumps(result))
    else:
        print(
            f"{result['op']} x{result['clients']} clients{path}, {result['seconds']}s: {result['ops_per_sec']} ops/s, "
            f"p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms, "
            f"max {result['max_ms']} ms, errors {result['errors']}"
        )
    return 0 if result["ops"] else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paxos.bench",
        add_help=False,
        description="Closed-loop benchmark of a paxoskv cluster: N clients, one operation in flight each.",
        epilog="Example: python -m paxos.bench -h local-cluster/hostfile.txt --clients 64 --seconds 10 --op set",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", "--hostfile", required=True, help="the cluster's hostfile")
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help=(
            f"connect with TLS using DIR/ca.pem and DIR/client.pem (default ${TLS_DIR_ENV}, else a tls directory "
            "beside the hostfile, else plaintext)"
        ),
    )
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="run time (default 10)")
    parser.add_argument("--op", choices=["set", "get", "mixed"], default="set", help="operation (default set)")
    parser.add_argument("--value-size", type=int, default=128, help="bytes per value (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed for key choice (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Not in build_parser: the etcd twin of this tool shares those options, and has one path.
    parser.add_argument(
        "--unary", action="store_true", help="one gRPC call per operation instead of the library's session streams"
    )
    opts = parser.parse_args(argv)
    if opts.clients < 1 or opts.seconds <= 0 or opts.value_size < 0:
        parser.error("--clients and --seconds must be positive and --value-size not negative")
    try:
        members = parse_hostfile(opts.hostfile)
        tls_dir = find_tls_dir(opts.hostfile, opts.tls_dir)
        if tls_dir is not None:
            client_credentials(tls_dir)  # unreadable TLS files: a usage error now, not an error per operation
    except (HostfileError, TlsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("PAXOSKV_BENCH_UVLOOP", "1") == "1":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    result = asyncio.run(run(members, opts, tls_dir))
    return report(result, opts.json)


if __name__ == "__main__":
    sys.exit(main())
