"""Time from ``kill -9`` of the leader to the next successful write.

    python -m benchmarks.failover [--rounds 20] [--nodes 5]

Starts a local cluster in a temporary directory.  Each round: wait until
every server is up and a majority agrees on a leader, write once, SIGKILL the
leader, then write in a loop until a write succeeds; the time from the kill
to that success is one sample.  The killed server is restarted before the
next round.  Prints each sample and the median, p90, min and max.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import tempfile
import time
from pathlib import Path

from client import KVClient, KVError
from tools.localcluster import LocalCluster


def one_round(cluster: LocalCluster, kv: KVClient, round_no: int) -> float:
    leader = cluster.wait_for_leader(timeout=60)
    kv.set("failover-probe", f"before-{round_no}")
    killed_at = time.monotonic()
    cluster.kill(leader, signal.SIGKILL)
    while True:
        try:
            kv.set("failover-probe", f"after-{round_no}")
            break
        except KVError:
            continue
    elapsed = time.monotonic() - killed_at
    cluster.start_node(leader)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.failover", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    opts = parser.parse_args(argv)
    samples = []
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp) / "cluster", nodes=opts.nodes) as cluster:
        with KVClient.from_hostfile(cluster.hostfile, timeout=30) as kv:
            for round_no in range(opts.rounds):
                sample = one_round(cluster, kv, round_no)
                samples.append(sample)
                print(f"round {round_no + 1}: {sample * 1000:.0f} ms", flush=True)
                # Let the restarted server rejoin before the next kill.
                deadline = time.monotonic() + 60
                while not all(n["reachable"] for n in kv.status()) and time.monotonic() < deadline:
                    time.sleep(0.1)
    samples.sort()
    p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
    print(
        f"kill -9 of the leader to next successful write, {len(samples)} rounds, {opts.nodes} servers: "
        f"median {statistics.median(samples) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
        f"min {samples[0] * 1000:.0f} ms, max {samples[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
