"""The commands run as a user runs them: ``python -m client`` and ``python -m paxos``, each a new process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.harness import PROJECT

SLACK_SECONDS = 120.0  # on top of the command's own timeout: a hang guard, not a speed check


def client_argv(hostfile: Path, *args: str, timeout: float | None = 10.0) -> list[str]:
    """``python -m client -h HOSTFILE [--timeout T] ARGS``; no ``--timeout`` with ``timeout=None``."""
    limit = [] if timeout is None else ["--timeout", f"{timeout:g}"]
    return [sys.executable, "-m", "client", "-h", str(hostfile), *limit, *args]


def run_cli(
    hostfile: Path,
    *args: str,
    timeout: float | None = 10.0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The client command line, run to its end from the checkout, its output as text."""
    return subprocess.run(
        client_argv(hostfile, *args, timeout=timeout),
        input=input,
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=(timeout or 0) + SLACK_SECONDS,
    )


def run_cli_bytes(hostfile: Path, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[bytes]:
    """As ``run_cli``, its output as bytes: what it printed, line endings included."""
    return subprocess.run(
        client_argv(hostfile, *args, timeout=timeout), capture_output=True, cwd=PROJECT, timeout=timeout + SLACK_SECONDS
    )


def server_argv(hostfile: Path, name: str, data_dir: Path, listen: str = "127.0.0.1:0") -> list[str]:
    """``python -m paxos`` for one server of a hostfile."""
    return [
        sys.executable,
        "-m",
        "paxos",
        "-h",
        str(hostfile),
        "-n",
        name,
        "--data-dir",
        str(data_dir),
        "--listen",
        listen,
    ]


def run_server(
    hostfile: Path, name: str, data_dir: Path, listen: str = "127.0.0.1:0", timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """A server that must refuse to start and exit by itself; one that serves instead is killed at the deadline."""
    argv = server_argv(hostfile, name, data_dir, listen)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=PROJECT)
