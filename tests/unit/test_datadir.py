"""A data directory's lock and stamp, with plain calls: no server runs.

A server that never got going (refused its directory, failed after opening
its log) must still give the lock back.  The in-process and real-process
halves are tests/inprocess/test_datadir.py and tests/processes/test_datadir.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from paxos.common.hostfile import Member
from paxos.consensus.core import Config
from paxos.server.service import META_FILE, PaxosServer, check_data_dir
from paxos.storage.datadir import LOCK_FILE, DataDirError, lock_data_dir
from tests.harness.datadirs import assert_unlocked

MEMBERS = [Member("node1", "127.0.0.1", 1)]


def test_release_frees_the_lock_for_this_process_and_keeps_the_file(tmp_path: Path) -> None:
    first = lock_data_dir(tmp_path / "new" / "dir")  # created on the way
    with pytest.raises(DataDirError, match=f"pid {os.getpid()}"):
        lock_data_dir(tmp_path / "new" / "dir")  # a second open file is a second owner, even here
    first.release()
    first.release()  # again: nothing happens
    assert not first.held
    assert (tmp_path / "new" / "dir" / LOCK_FILE).exists()
    second = lock_data_dir(tmp_path / "new" / "dir")
    assert second.held
    second.release()


def test_a_stale_pid_of_any_length_is_overwritten(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("123456789012\n")
    lock = lock_data_dir(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_fresh_data_dir_holding_only_the_lock_file_is_accepted(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path)
    try:
        check_data_dir(tmp_path, "node1", MEMBERS)
    finally:
        lock.release()
    assert json.loads((tmp_path / META_FILE).read_text())["name"] == "node1"


def test_a_server_refused_its_data_dir_releases_the_lock(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_text(json.dumps({"format": 2, "name": "other", "members": {}}))
    with pytest.raises(DataDirError, match="belongs to server 'other'"):
        PaxosServer(MEMBERS, "node1", tmp_path)
    assert_unlocked(tmp_path)


def test_a_server_failing_after_opening_its_log_releases_the_lock(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown planted bugs"):
        PaxosServer(MEMBERS, "node1", tmp_path, config=Config(planted_bugs=frozenset({"no_such_bug"})))
    assert_unlocked(tmp_path)
