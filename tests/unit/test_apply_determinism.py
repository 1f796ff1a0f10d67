"""A data directory is stamped with the data format, and a later format is refused: plain calls.

The replicas on loopback are tests/processes/test_apply_determinism.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paxos.common.hostfile import Member
from paxos.server.service import DATA_FORMAT, META_FILE, DataDirError, check_data_dir


def test_new_data_dir_is_stamped_with_the_data_format(tmp_path: Path) -> None:
    members = [Member("a", "127.0.0.1", 1)]
    check_data_dir(tmp_path / "a", "a", members)
    assert json.loads((tmp_path / "a" / META_FILE).read_text())["format"] == DATA_FORMAT
    check_data_dir(tmp_path / "a", "a", members)  # and it is accepted again
    (tmp_path / "a" / META_FILE).write_text(json.dumps({"name": "a", "cluster": ["a"], "format": 99}))
    with pytest.raises(DataDirError, match="data format 99"):
        check_data_dir(tmp_path / "a", "a", members)
