"""The commands' entry points as a user starts them: each ``--help`` from a new Python process.

The command line against a fake client is tests/unit/test_cli.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import PROJECT


def test_help_works_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "client", "--help"], cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m client [-h HOSTFILE]")


def test_server_help_is_named_as_invoked(tmp_path: Path) -> None:
    script = tmp_path / "paxoskv-server"
    script.write_text(f"import sys\nsys.path.insert(0, {str(PROJECT)!r})\nfrom paxos.__main__ import main\nmain()\n")
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("usage: paxoskv-server "), result.stdout[:200]
    module = subprocess.run(
        [sys.executable, "-m", "paxos", "--help"], cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
    assert module.stdout.startswith("usage: python -m paxos "), module.stdout[:200]


def test_local_cluster_usage_names_every_option() -> None:
    usage = " ".join(
        subprocess.run(
            [sys.executable, "-m", "paxos.local", "--help"], cwd=PROJECT, capture_output=True, text=True, timeout=60
        )
        .stdout.split("\n\n")[0]
        .split()
    )
    for option in ("--dir", "--nodes", "--base-port", "--no-client", "--startup-timeout", "-- SERVER_ARGS"):
        assert option in usage, usage
