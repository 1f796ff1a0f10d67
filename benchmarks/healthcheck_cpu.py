"""CPU time of one Docker health probe: the Dockerfile's HEALTHCHECK against the old Python one.

    python -m benchmarks.healthcheck_cpu [--probes 20]

Starts one server (a one-member cluster in a temporary directory) with
``--metrics``, then runs each probe ``--probes`` times against it, outside
Docker, and prints the mean user+system CPU seconds per probe, measured with
getrusage(RUSAGE_CHILDREN) around the runs (what ``/usr/bin/time`` reports
for one).  The HEALTHCHECK command is read from the Dockerfile itself, with
$PAXOSKV_METRICS pointing at this server, so the numbers are for the command
that ships.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 30.0


def healthcheck_command(dockerfile: Path = ROOT / "Dockerfile") -> list[str]:
    """The exec-form CMD of the Dockerfile's HEALTHCHECK instruction."""
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("HEALTHCHECK"):
            command: list[str] = json.loads(line[line.index("CMD") + len("CMD") :].strip())
            return command
    raise ValueError(f"{dockerfile} has no HEALTHCHECK instruction")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_per_run(command: list[str], runs: int, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=20, help="runs of each probe (default %(default)s)")
    opts = parser.parse_args()
    grpc_port, metrics_port = _free_port(), _free_port()
    env = {**os.environ, "PAXOSKV_METRICS": f"127.0.0.1:{metrics_port}"}
    with tempfile.TemporaryDirectory() as tmp:
        hostfile = Path(tmp) / "hostfile.txt"
        hostfile.write_text(f"s0 127.0.0.1:{grpc_port}\n")
        server = subprocess.Popen(
            [sys.executable, "-m", "paxos", "-h", str(hostfile), "-n", "s0", "--data-dir", f"{tmp}/s0"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            probes = {
                "Dockerfile HEALTHCHECK (bash /dev/tcp, GET /healthz)": healthcheck_command(),
                "python -m paxos.healthcheck (gRPC health)": [
                    sys.executable,
                    "-m",
                    "paxos.healthcheck",
                    "--address",
                    f"127.0.0.1:{grpc_port}",
                ],
            }
            deadline = time.monotonic() + START_SECONDS
            while subprocess.run(healthcheck_command(), env=env, stderr=subprocess.DEVNULL).returncode != 0:
                if time.monotonic() > deadline:
                    print(f"the server did not become healthy within {START_SECONDS:g} s", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            for name, command in probes.items():
                seconds = cpu_per_run(command, opts.probes, {**env, "PYTHONPATH": str(ROOT)})
                print(f"{name}: {seconds * 1000:.1f} ms CPU per probe (mean of {opts.probes})")
        finally:
            server.terminate()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
