"""The code style checks of ENGINEERING.md, run with the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import PROJECT


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600)


def _ruff() -> str | None:
    """The ruff installed with this interpreter, else one on PATH.

    ``.venv/bin/python -m pytest`` runs without the virtualenv's bin folder
    on PATH: looking only there would skip the check in the very run that
    has ruff installed.
    """
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.is_file() else shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_is_clean() -> None:
    ruff = _ruff()
    assert ruff is not None
    result = _run(ruff, "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_the_product() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    result = _run(sys.executable, "-m", "mypy", "paxos", "client", "tools", "protos/generate.py")
    assert result.returncode == 0, result.stdout + result.stderr
