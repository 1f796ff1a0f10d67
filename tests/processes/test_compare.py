"""A short smoke run of the side-by-side benchmark on both paxoskv paths, real servers (no speed assertions).

Its CPU accounting and report, with plain calls, are tests/unit/test_compare.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.compare import PAXOSKV_PATHS
from tests.harness import PROJECT

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")


@linux_only
def test_compare_smoke_run_reports_throughput_and_server_cpu_for_both_paths(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--systems", "paxoskv,paxoskv-unary", "--clients", "4",
         "--seconds", "2", "--warmup", "0", "--no-plot", "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=280, cwd=PROJECT,
    )  # fmt: skip
    assert result.returncode == 0, (time.monotonic() - started, result.stderr[-3000:])
    report = json.loads((out / "results.json").read_text())
    assert not (out / "results.png").exists()
    rows = {(r["system"], r["op"]): r for r in report["results"]}
    assert set(rows) == {(system, op) for system in PAXOSKV_PATHS for op in ("set", "get")}
    for (system, _op), row in rows.items():
        assert row["path"] == PAXOSKV_PATHS[system]
        assert row["clients"] == 4
        assert row["ops"] > 0 and row["errors"] == 0, row
        assert row["server_cpu_seconds"] > 0, row
        assert row["server_cpu_us_per_op"] == pytest.approx(row["server_cpu_seconds"] / row["ops"] * 1e6, rel=0.05)
    markdown = (out / "results.md").read_text()
    assert "| system | protocol | op | clients | ops/s |" in markdown
    assert "| server CPU us/op | errors |" in markdown
    assert "| paxoskv | session stream | write | 4 |" in markdown
    assert "| paxoskv-unary | unary gRPC | linearizable read | 4 |" in markdown
    assert "Coalescing only combines operations of different callers that are in flight at the same moment" in (
        markdown
    )
    assert "- **paxoskv**: the library's session path" in markdown
    assert "- **paxoskv-unary**: `paxos.bench --unary`" in markdown
