"""Where a backup may be written: the caller's mistakes are found before the cluster is asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client.aio import AsyncKVClient
from client.errors import InvalidRequest
from paxos.common.hostfile import Member

# Nothing listens here: a backup that got as far as asking the cluster would
# fail as unavailable, not as the caller's mistake.
NOWHERE = [Member("node1", "127.0.0.1", 1)]


def _backup(path: Path) -> None:
    async def run() -> None:
        kv = AsyncKVClient(NOWHERE, timeout=2)
        try:
            await kv.backup(path)
        finally:
            await kv.close()

    asyncio.run(run())


def test_a_directory_the_backup_cannot_be_written_in_is_refused_in_one_line() -> None:
    # /proc takes no new files, even from root (who may write anywhere else).
    with pytest.raises(InvalidRequest, match=r"^cannot write a backup in /proc: ") as refused:
        _backup(Path("/proc/paxoskv-backup.snap"))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_a_backup_path_that_names_no_file_in_an_existing_directory_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "nothing-here" / "b.snap" if where == "missing" else tmp_path
    with pytest.raises(InvalidRequest):
        _backup(path)
    assert list(tmp_path.iterdir()) == [], "a refused backup left a file behind"
