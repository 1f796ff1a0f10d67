"""What TLS costs: the same load against a plaintext and a TLS cluster, in one run.

    python -m benchmarks.tls_cost [--nodes 5] [--clients 1,64] [--seconds 3] [--out docs/benchmarks/tls.md]

For each mode (plaintext, then TLS with certificates from paxos.certs and
client certificates required) it starts a ``LocalCluster`` in a temporary
directory, and for each client count runs ``python -m paxos.bench`` for
writes (``set``) and linearizable reads (``get``), each ``--seconds`` long
after a discarded one-second warm-up.  Prints a Markdown table; ``--out``
also writes it to a file with the command and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tools.localcluster import LocalCluster

PROJECT = Path(__file__).resolve().parent.parent
OPS = {"set": "write", "get": "linearizable read"}


def bench(cluster: LocalCluster, op: str, clients: int, seconds: float) -> dict[str, object]:
    command = [sys.executable, "-m", "paxos.bench", "-h", str(cluster.hostfile), "--op", op]
    command += ["--clients", str(clients), "--seconds", str(seconds), "--json"]
    if cluster.tls_dir is not None:
        command += ["--tls-dir", str(cluster.tls_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, cwd=PROJECT)
    if result.returncode != 0:
        raise RuntimeError(f"paxos.bench failed: {result.stderr.strip()[-500:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def measure(nodes: int, clients: list[int], seconds: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for tls in (False, True):
        with tempfile.TemporaryDirectory(prefix="paxoskv-tls-cost-") as tmp:
            with LocalCluster(Path(tmp) / "cluster", nodes=nodes, tls=tls) as cluster:
                cluster.wait_for_leader(timeout=60)
                for op in OPS:
                    for count in clients:
                        bench(cluster, op, count, 1.0)  # warm-up, discarded
                        result = bench(cluster, op, count, seconds)
                        rows.append({"mode": "TLS" if tls else "plaintext", **result})
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| mode | op | clients | ops/s | p50 ms | p90 ms | p99 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {OPS[str(r['op'])]} | {r['clients']} | {r['ops_per_sec']} | {r['p50_ms']} | "
            f"{r['p90_ms']} | {r['p99_ms']} | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tls_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="servers in each cluster (default 5)")
    parser.add_argument("--clients", default="1,64", help="comma-separated client counts (default 1,64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measured run (default 3)")
    parser.add_argument("--out", type=Path, help="also write the table, with how it was made, to this file")
    opts = parser.parse_args(argv)
    clients = [int(c) for c in opts.clients.split(",")]
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    began = time.monotonic()
    rows = measure(opts.nodes, clients, opts.seconds)
    text = table(rows)
    print(text)
    if opts.out is not None:
        command = (
            f"python -m benchmarks.tls_cost --nodes {opts.nodes} --clients {opts.clients} --seconds {opts.seconds:g}"
        )
        opts.out.write_text(
            f"Generated {started:%Y-%m-%d %H:%M} UTC by `{command}` in {time.monotonic() - began:.0f} s on "
            f"{platform.machine()} with {os.cpu_count()} CPUs; load average before the run "
            f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}.\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
