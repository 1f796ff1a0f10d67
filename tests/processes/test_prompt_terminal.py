"""The prompt on a real terminal (pexpect): Ctrl-C, quoting and per-cluster history, through python -m paxos.local."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from client.cli import history_path
from tests.harness import PROJECT

START_SECONDS = 90  # five servers on a shared two-core machine
ANSWER_SECONDS = 30


def spawn_launcher(tmp_path: Path, *args: str) -> pexpect.spawn:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path / "home"))
    return pexpect.spawn(
        sys.executable,
        ["-m", "paxos.local", "--dir", str(tmp_path / "cluster"), "--nodes", "3", *args],
        cwd=str(PROJECT),
        env=env,
        encoding="utf-8",
        timeout=ANSWER_SECONDS,
        dimensions=(40, 200),
    )


@pytest.fixture
def prompt(tmp_path: Path) -> Iterator[pexpect.spawn]:
    child = spawn_launcher(tmp_path)
    child.expect_exact("paxoskv>", timeout=START_SECONDS)
    yield child
    if child.isalive():
        child.kill(15)
        child.expect(pexpect.EOF, timeout=START_SECONDS)


def command(child: pexpect.spawn, line: str, answer: str) -> None:
    child.sendline(line)
    child.expect_exact(answer)
    child.expect_exact("paxoskv>")


def test_ctrl_c_cancels_a_line_quotes_group_words_and_history_is_per_cluster(
    prompt: pexpect.spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command(prompt, 'set "my key" "a  value"', "OK")
    command(prompt, "get 'my key'", "a  value")

    prompt.send("set cancelled 1")
    prompt.sendintr()  # Ctrl-C drops the typed line, the prompt stays, the servers keep running
    prompt.expect_exact("paxoskv>")
    command(prompt, "get cancelled", "not found")
    assert prompt.isalive()

    prompt.sendline("quit")
    prompt.expect_exact("stopping the servers", timeout=START_SECONDS)
    prompt.expect(pexpect.EOF, timeout=START_SECONDS)
    prompt.close()
    assert prompt.exitstatus == 0

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # as the launcher had it
    history = history_path(tmp_path / "cluster" / "hostfile.txt")
    assert history.is_relative_to(tmp_path / "state")
    assert 'set "my key" "a  value"' in history.read_text()
    assert "set cancelled" not in history.read_text()
    assert [p.name for p in history.parent.iterdir()] == [history.name]
    assert not (tmp_path / "home" / ".paxoskv_history").exists()


def test_ctrl_c_without_the_prompt_stops_everything(tmp_path: Path) -> None:
    child = spawn_launcher(tmp_path, "--no-client")
    child.expect_exact("Ctrl-C stops the cluster", timeout=START_SECONDS)
    child.sendintr()
    child.expect_exact("stopping the servers")
    child.expect(pexpect.EOF, timeout=START_SECONDS)
    child.close()
    assert child.exitstatus == 0


def test_the_help_says_what_ctrl_c_does() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "paxos.local", "--help"], cwd=PROJECT, capture_output=True, text=True, timeout=60
    ).stdout
    flat = " ".join(text.split())
    assert "Leaving the prompt (quit or Ctrl-D) stops every server" in flat
    assert "at the prompt Ctrl-C only cancels the line" in flat
    assert "Outside the prompt (while starting, or with --no-client) Ctrl-C stops every server" in flat
