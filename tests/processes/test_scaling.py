"""5 -> 7 -> 3 -> 5 real servers under a recorded client load (``tests/harness/scaling.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import scaling


@pytest.mark.timeout(600)
def test_grow_shrink_and_replace_under_load_stays_linearizable(tmp_path: Path) -> None:
    anomalies = scaling.run(tmp_path)
    assert not anomalies, "\n".join(anomalies) + f"\nlogs in {tmp_path}"
