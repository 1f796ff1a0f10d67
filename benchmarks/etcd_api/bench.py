"""Closed-loop load generator for etcd: ``python -m benchmarks.etcd_api.bench -h HOSTFILE ...``.

The etcd twin of ``python -m paxos.bench``, with the same options, the same
loop and the same JSON keys, so the two systems are measured alike: N clients
in one process (one asyncio loop, one gRPC channel per member), each with one
operation in flight, one operation per RPC.  Writes are one ``KV.Put``; reads
are one ``KV.Range`` with ``serializable=false``, i.e. linearizable.  Like
paxos.bench, every client talks to the leader (found with
``Maintenance.Status``) and moves to the next member when an RPC fails.

The HOSTFILE has paxoskv's format (``NAME HOST:PORT`` per line) and lists the
members' *client* URLs.  Keys are ``--key-size`` bytes (default 16), drawn
from the same key space as paxos.bench; gets preload the same keys first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from types import ModuleType

import grpc

from benchmarks.etcd_api import StubError, load_stubs
from paxos.common.hostfile import HostfileError, Member, parse_hostfile
from tools.bench import ATTEMPT_SECONDS, KEYSPACE, READ_KEYS, Stats, build_parser, report, summarize

DEFAULT_KEY_SIZE = 16
KEY_PREFIX = "bench-"

OneOp = Callable[[str, int], Awaitable[bool]]  # (op, key index) -> succeeded


class EtcdTarget:
    """Stubs for every member and the leader guess, shared by all clients."""

    def __init__(self, members: list[Member], pb2: ModuleType, pb2_grpc: ModuleType) -> None:
        self.members = members
        self.pb2 = pb2
        self.channels = {m.name: grpc.aio.insecure_channel(m.address) for m in members}
        self.kv = {name: pb2_grpc.KVStub(ch) for name, ch in self.channels.items()}
        self.maintenance = {name: pb2_grpc.MaintenanceStub(ch) for name, ch in self.channels.items()}
        self.leader = members[0].name

    async def find_leader(self) -> None:
        """Point at the member that reports itself as leader; keep the guess if none does."""
        for name, stub in self.maintenance.items():
            try:
                status = await stub.Status(self.pb2.StatusRequest(), timeout=ATTEMPT_SECONDS)
            except grpc.aio.AioRpcError:
                continue
            if status.leader and status.header.member_id == status.leader:
                self.leader = name
                return

    def next_member(self) -> None:
        names = list(self.kv)
        self.leader = names[(names.index(self.leader) + 1) % len(names)]

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def make_key(index: int, size: int) -> bytes:
    """``bench-0000000042`` style: the key index zero-padded to ``size`` bytes."""
    digits = max(1, size - len(KEY_PREFIX))
    return f"{KEY_PREFIX}{index:0{digits}d}".encode()


def etcd_one_op(target: EtcdTarget, opts: argparse.Namespace) -> OneOp:
    pb2 = target.pb2
    value = b"x" * opts.value_size

    async def one_op(op: str, index: int) -> bool:
        key = make_key(index, opts.key_size)
        for _ in range(len(target.members) * 3):
            stub = target.kv[target.leader]
            try:
                if op == "set":
                    await stub.Put(pb2.PutRequest(key=key, value=value), timeout=ATTEMPT_SECONDS)
                else:
                    await stub.Range(pb2.RangeRequest(key=key, serializable=False), timeout=ATTEMPT_SECONDS)
            except grpc.aio.AioRpcError:
                target.next_member()
                continue
            return True
        return False

    return one_op


# The measurement loop is tools.bench's, parameterized by the operation so
# that any system can plug in; tools.bench could call it too.


async def closed_loop_client(one_op: OneOp, op: str, stop_at: float, stats: Stats, rng: random.Random) -> None:
    while time.monotonic() < stop_at:
        this_op = op if op != "mixed" else ("set" if rng.random() < 0.5 else "get")
        index = rng.randrange(KEYSPACE if this_op == "set" else READ_KEYS)  # as paxos.bench
        started = time.perf_counter()
        ok = await one_op(this_op, index)
        if ok:
            stats.latencies.append(time.perf_counter() - started)
        else:
            stats.errors += 1
        stats.done += 1


async def closed_loop(one_op: OneOp, opts: argparse.Namespace) -> dict[str, float | int | str]:
    """``opts.clients`` clients for ``opts.seconds``; tools.bench's summary of the result."""
    rng = random.Random(opts.seed)
    stats = Stats()
    started = time.monotonic()
    stop_at = started + opts.seconds
    clients = [
        closed_loop_client(one_op, opts.op, stop_at, stats, random.Random(rng.random())) for _ in range(opts.clients)
    ]
    await asyncio.gather(*clients)
    return summarize(stats, time.monotonic() - started, opts)


async def run(members: list[Member], opts: argparse.Namespace) -> dict[str, float | int | str]:
    pb2, pb2_grpc = load_stubs()
    target = EtcdTarget(members, pb2, pb2_grpc)
    try:
        await target.find_leader()
        one_op = etcd_one_op(target, opts)
        if opts.op in ("get", "mixed"):
            for index in range(READ_KEYS):
                await one_op("set", index)
        return await closed_loop(one_op, opts)
    finally:
        await target.close()


def build_etcd_parser() -> argparse.ArgumentParser:
    parser = build_parser()  # tools.bench's options, so both tools take the same command line
    parser.prog = "python -m benchmarks.etcd_api.bench"
    parser.description = "Closed-loop benchmark of an etcd cluster: N clients, one operation per RPC each."
    parser.epilog = "Example: python -m benchmarks.etcd_api.bench -h etcd-hosts.txt --clients 64 --seconds 10 --op set"
    parser.add_argument(
        "--key-size", type=int, default=DEFAULT_KEY_SIZE, help=f"bytes per key (default {DEFAULT_KEY_SIZE})"
    )
    for action in parser._actions:
        if action.dest == "hostfile":
            action.help = "file listing the members' client addresses, one 'NAME HOST:PORT' per line"
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_etcd_parser()
    opts = parser.parse_args(argv)
    if opts.clients < 1 or opts.seconds <= 0 or opts.value_size < 0:
        parser.error("--clients and --seconds must be positive and --value-size not negative")
    if opts.key_size < len(KEY_PREFIX) + len(str(KEYSPACE - 1)):
        parser.error(f"--key-size must be at least {len(KEY_PREFIX) + len(str(KEYSPACE - 1))} to hold every key")
    try:
        members = parse_hostfile(opts.hostfile)
    except HostfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("PAXOSKV_BENCH_UVLOOP", "1") == "1":  # same event loop choice as paxos.bench
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    try:
        result = asyncio.run(run(members, opts))
    except StubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report(result, opts.json)


if __name__ == "__main__":
    sys.exit(main())
