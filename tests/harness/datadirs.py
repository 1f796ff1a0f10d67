"""Data directories as the tests look at them from outside the server."""

from __future__ import annotations

from pathlib import Path

from paxos.storage.datadir import lock_data_dir


def assert_unlocked(directory: Path) -> None:
    """Nothing holds the directory's lock: taking it here succeeds (DataDirError otherwise)."""
    lock_data_dir(directory).release()
