"""Every way out of a running server gives its data directory's lock back: servers in this process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

import paxos.__main__ as server_main
from paxos.common.hostfile import Member
from paxos.server.service import PaxosServer
from paxos.storage.datadir import DataDirError, lock_data_dir
from tests.harness.datadirs import assert_unlocked
from tests.harness.inprocess import free_port

MEMBERS = [Member("node1", "127.0.0.1", 1)]


def test_a_stopped_server_releases_the_lock(tmp_path: Path) -> None:
    server = PaxosServer(MEMBERS, "node1", tmp_path)
    with pytest.raises(DataDirError):
        lock_data_dir(tmp_path)

    async def run() -> None:
        await server.start(f"127.0.0.1:{free_port()}")
        await server.stop()

    asyncio.run(run())
    assert_unlocked(tmp_path)


def test_a_busy_address_exits_2_saying_so_and_releases_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        hostfile = tmp_path / "hostfile.txt"
        hostfile.write_text(f"node1 {address}\n")
        argv = ["-h", str(hostfile), "-n", "node1", "--data-dir", str(tmp_path / "d"), "--listen", address]
        assert server_main.main(argv) == server_main.EXIT_USAGE
    assert f"error: cannot listen on {address}: address in use" in capsys.readouterr().err
    assert_unlocked(tmp_path / "d")
