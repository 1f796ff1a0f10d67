"""One Jepsen-style run against five real servers: kills, pauses and partitions, then checks.

``PAXOSKV_NEMESIS_SEED`` picks another fault schedule; longer and repeated
runs: ``python -m tests.harness.nemesis --seconds 60 --seed N --runs K``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness import nemesis

SECONDS = 20.0  # of faults; start-up, healing and the checks come on top
DEFAULT_SEED = 7


def test_faults_leave_no_anomaly(tmp_path: Path) -> None:
    seed = int(os.environ.get("PAXOSKV_NEMESIS_SEED", DEFAULT_SEED))
    config = nemesis.RunConfig(seconds=SECONDS, seed=seed, directory=tmp_path / "cluster")
    result = nemesis.run(config, log=print)
    print(result.report())
    assert result.ok, result.report()
    # The run must have done something, or passing proves nothing.
    assert sum(result.faults.values()) > 0, result.report()
    assert any(counts.get("ok", 0) for counts in result.operations.values()), result.report()
    # Servers snapshotted and compacted their logs during the faults.
    assert result.snapshots["written"] > 0, result.report()
