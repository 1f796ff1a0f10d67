"""``python -m paxos.local`` as a user runs it: a real launcher process with real servers."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PROJECT
from tests.harness.cli import run_cli
from tests.harness.polling import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the servers' pids")


class Launcher:
    """``python -m paxos.local`` with piped stdin; its stderr lines collected as they come."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paxos.local", "--dir", str(directory), *args],
            cwd=PROJECT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert self.process.stderr is not None
        threading.Thread(target=self._pump, args=(self.process.stderr,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))

    def seen(self, text: str) -> str | None:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return next((line for line in self.lines if text in line), None)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        return wait_until(lambda: self.seen(text), f"{text!r} on the launcher's stderr", timeout=timeout)

    def servers(self) -> dict[str, int]:
        """Server name -> pid, from the launcher's children's command lines."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found = {}
        for child in children:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-n" in argv:
                found[argv[argv.index(b"-n") + 1].decode()] = int(child)
        return found


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    run = Launcher(tmp_path / "cluster", "--nodes", "3")
    yield run
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGTERM)
        run.process.wait(timeout=60)


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_a_killed_server_is_reported_reaped_and_fails_the_exit_status(launcher: Launcher) -> None:
    launcher.wait_for_line("connect from another terminal")
    servers = wait_until(lambda: s if len(s := launcher.servers()) == 3 else None, "three servers")
    os.kill(servers["node3"], signal.SIGKILL)

    line = launcher.wait_for_line("node3 exited")
    assert "node3 exited (signal 9, SIGKILL); 2 of 3 up" in line
    wait_until(lambda: _gone(servers["node3"]), "node3 reaped (no zombie left)", timeout=10)
    assert _is_zombie_or_gone(servers["node3"])

    assert launcher.process.stdin is not None
    launcher.process.stdin.close()  # end of input leaves the prompt and stops the cluster
    assert launcher.process.wait(timeout=60) == 1
    launcher.seen("")
    assert sum("node3 exited" in line for line in launcher.lines) == 1, launcher.lines
    assert any("node3 had exited" in line for line in launcher.lines), launcher.lines
    for name in ("node1", "node2"):
        pid = servers[name]
        wait_until(lambda: _gone(pid), f"{name} stopped", timeout=10)  # noqa: B023 (used at once)


def test_stopping_with_every_server_up_exits_0(launcher: Launcher) -> None:
    launcher.wait_for_line("connect from another terminal")
    assert launcher.process.stdin is not None
    launcher.process.stdin.close()
    assert launcher.process.wait(timeout=60) == 0


def _client(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m client`` from another terminal, as the banner says, with the same cwd as the launcher."""
    env = {k: v for k, v in os.environ.items() if k not in ("PAXOSKV_TLS_DIR", "PAXOSKV_HOSTFILE")}
    return run_cli(directory / "hostfile.txt", *args, timeout=10, env=env)


def test_the_local_cluster_runs_tls_and_another_terminal_finds_the_certificates(
    launcher: Launcher, tmp_path: Path
) -> None:
    launcher.wait_for_line("connect from another terminal")
    assert launcher.seen("made TLS certificates")
    assert "TLS, certificates in" in str(launcher.seen("security:"))
    directory = tmp_path / "cluster"
    assert {"ca.pem", "node1.pem", "client.pem", "admin.pem"} <= {p.name for p in (directory / "tls").iterdir()}
    assert _client(directory, "set", "k", "over tls").returncode == 0
    got = _client(directory, "get", "k")
    assert (got.returncode, got.stdout) == (0, "over tls\n"), got.stderr
    # Backups and member changes present admin.pem, found in the same directory.
    backup = _client(directory, "backup", str(tmp_path / "local.backup"))
    assert backup.returncode == 0 and (tmp_path / "local.backup").exists(), backup.stderr
    synced = _client(directory, "members", "sync", "--timeout", "30")
    assert synced.returncode == 0, synced.stderr
    assert "TLS on" in (directory / "node1.log").read_text()


def test_insecure_runs_plaintext(tmp_path: Path) -> None:
    run = Launcher(tmp_path / "cluster", "--nodes", "1", "--insecure")
    try:
        run.wait_for_line("connect from another terminal")
        assert "plaintext (--insecure)" in str(run.seen("security:"))
        assert not (tmp_path / "cluster" / "tls").exists()
        assert "without TLS" in (tmp_path / "cluster" / "node1.log").read_text()
        assert _client(tmp_path / "cluster", "set", "k", "v").returncode == 0
    finally:
        assert run.process.stdin is not None
        run.process.stdin.close()
        assert run.process.wait(timeout=60) == 0
