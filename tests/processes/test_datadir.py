"""A server owns its data directory and its port alone: real processes.

A helper process holds the lock against this one, and real ``python -m paxos``
processes on loopback race for a directory and a port.  The lock with plain
calls is in tests/unit/test_datadir.py, servers in this process in
tests/inprocess/test_datadir.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paxos.storage.datadir import LOCK_FILE, DataDirError, lock_data_dir
from tests.harness import PROJECT
from tests.harness.cli import run_server, server_argv
from tests.harness.datadirs import assert_unlocked
from tests.harness.inprocess import free_port
from tests.harness.polling import wait_until

EXIT_DEADLINE = 30.0  # a refused server must be gone well within this

# Locks DIR (argv[1]), says so, then holds the lock until its stdin closes.
_HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from paxos.storage.datadir import lock_data_dir\n"
    "lock = lock_data_dir(Path(sys.argv[1]))\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process a test starts goes here and is killed when the test ends, pass or fail."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def hold_lock_elsewhere(directory: Path, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=PROJECT,
    )
    processes.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"locked\n"  # ends at EOF if the holder dies
    return holder


# --------------------------------------------------------------- the lock


def test_a_lock_held_by_another_process_is_refused_naming_its_pid(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    holder = hold_lock_elsewhere(tmp_path / "d", processes)
    with pytest.raises(DataDirError) as refused:
        lock_data_dir(tmp_path / "d")
    message = str(refused.value)
    assert f"data dir {tmp_path / 'd'} is in use by another paxoskv server (pid {holder.pid})" in message
    assert "\n" not in message


def test_the_lock_is_free_again_once_its_holder_is_killed(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    holder = hold_lock_elsewhere(tmp_path, processes)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=EXIT_DEADLINE)
    lock = lock_data_dir(tmp_path)  # the file is still there, but nobody holds it
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


# -------------------------------------------------------- real processes


class ServerCommand:
    """``python -m paxos`` for node1 of a one-line hostfile, run in the background or to its end."""

    def __init__(self, tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
        self.tmp_path = tmp_path
        self.processes = processes
        self.address = f"127.0.0.1:{free_port()}"
        self.hostfile = tmp_path / "hostfile.txt"
        self.hostfile.write_text(f"node1 {self.address}\n")
        self.logs: list[IO[bytes]] = []

    def argv(self, data_dir: str) -> list[str]:
        return server_argv(self.hostfile, "node1", self.tmp_path / data_dir, self.address)

    def start(self, data_dir: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{data_dir}.log").open("ab")
        self.logs.append(log)
        process = subprocess.Popen(self.argv(data_dir), stdout=log, stderr=log, cwd=PROJECT)
        self.processes.append(process)
        wait_until(lambda: self._serving(process, data_dir), what=f"the server on {data_dir} to serve")
        return process

    def run(self, data_dir: str) -> subprocess.CompletedProcess[str]:
        """Run to its end; a server that starts instead of refusing is killed at the deadline and fails the test."""
        return run_server(self.hostfile, "node1", self.tmp_path / data_dir, self.address, timeout=EXIT_DEADLINE)

    def _serving(self, process: subprocess.Popen[bytes], data_dir: str) -> bool:
        if process.poll() is not None:
            log = (self.tmp_path / f"{data_dir}.log").read_text(errors="replace")
            raise AssertionError(f"server exited with {process.returncode}:\n{log}")
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        for log in self.logs:
            log.close()


@pytest.fixture
def command(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> Iterator[ServerCommand]:
    cmd = ServerCommand(tmp_path, processes)
    yield cmd
    cmd.close()


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=EXIT_DEADLINE)


def test_a_second_server_on_the_same_data_dir_exits_4_naming_the_first(command: ServerCommand) -> None:
    first = command.start("data")
    second = command.run("data")
    assert second.returncode == 4, second.stderr
    assert f"error: data dir {command.tmp_path / 'data'} is in use by another paxoskv server (pid {first.pid})" in (
        second.stderr
    )
    assert first.poll() is None


def test_a_second_server_on_the_same_port_exits_2_saying_the_address_is_in_use(command: ServerCommand) -> None:
    first = command.start("data")
    second = command.run("other-data")
    assert second.returncode == 2, second.stderr
    assert f"error: cannot listen on {command.address}: address in use" in second.stderr
    assert_unlocked(command.tmp_path / "other-data")
    assert first.poll() is None


def test_a_stopped_server_leaves_its_data_dir_and_port_to_the_next(command: ServerCommand) -> None:
    assert stop(command.start("data")) == 0
    assert stop(command.start("data")) == 0
