"""How long taking a snapshot holds up the apply loop, and how long writing it takes.

    python -m benchmarks.snapshot_stall [--keys 10000] [--clients 5000] [--value-bytes 100]

Builds a state machine by applying one write per slot (keys round-robin,
clients round-robin, each client's window moving on), then times
``StateMachine.freeze`` (the only part that runs on the apply loop) and
writing the snapshot file (on a thread of its own in a server), and loading
it back.  Prints the three times and the file size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from paxos.kv import logcommand
from paxos.kv.statemachine import StateMachine
from paxos.storage import snapshot
from protos import kv_pb2


def build(keys: int, clients: int, value_bytes: int, writes: int) -> StateMachine:
    sm = StateMachine()
    value = "x" * value_bytes
    # Every client's session, registered first: sessions 1 to ``clients``.
    sm.apply(1, tuple(logcommand.register_session(1, n) for n in range(clients)))
    for i in range(writes):
        seq = i // clients
        cmd = kv_pb2.Command(session_id=1 + i % clients, seq=seq, first_unacked=max(0, seq - 3))
        cmd.set.key, cmd.set.value = f"key-{i % keys}", value
        sm.apply(i + 2, (logcommand.client_write(cmd),))
    return sm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.snapshot_stall",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--writes", type=int, default=0, help="writes to apply (default: 10 per key)")
    opts = parser.parse_args(argv)
    writes = opts.writes or 10 * opts.keys
    sm = build(opts.keys, opts.clients, opts.value_bytes, writes)
    freezes = []
    for _ in range(5):
        started = time.perf_counter()
        frozen = sm.freeze()
        freezes.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = snapshot.write_snapshot(Path(tmp), frozen, 1, [])
        written = time.perf_counter() - started
        started = time.perf_counter()
        snapshot.load(path)
        loaded = time.perf_counter() - started
        size = path.stat().st_size
    print(
        f"{opts.keys} keys, {opts.clients} client sessions, {writes} writes applied: "
        f"freeze (apply loop held up) median {sorted(freezes)[2] * 1000:.2f} ms, max {max(freezes) * 1000:.2f} ms; "
        f"write {written:.3f} s; load {loaded:.3f} s; {size} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
