"""``--log-format json``: one JSON object per log line, with member, ballot and slot."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

from paxos.common.logformat import JsonFormatter
from tests.inprocess import free_port
from tests.polling import wait_until

PROJECT = Path(__file__).resolve().parent.parent


def test_json_lines_carry_member_and_context() -> None:
    formatter = JsonFormatter("node7")
    record = logging.LogRecord("paxos.server", logging.INFO, __file__, 1, "became leader with %s", ("x",), None)
    record.ballot, record.slot = "3.1f", 42
    line = json.loads(formatter.format(record))
    assert line["member"] == "node7" and line["message"] == "became leader with x"
    assert (line["ballot"], line["slot"], line["level"]) == ("3.1f", 42, "INFO")
    plain = json.loads(formatter.format(logging.LogRecord("paxos", logging.WARNING, __file__, 1, "hi", (), None)))
    assert "ballot" not in plain and "slot" not in plain
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("paxos", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(failed))["exception"]


def test_a_server_logs_json_lines(tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text(f"solo 127.0.0.1:{free_port()}\n")
    log_path = tmp_path / "solo.log"
    with log_path.open("wb") as log_file:
        command = [sys.executable, "-m", "paxos", "-h", str(hostfile), "-n", "solo", "--data-dir", str(tmp_path / "d")]
        server = subprocess.Popen(
            [*command, "--log-format", "json"],
            cwd=PROJECT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: "became leader" in log_path.read_text(), "the server to lead", timeout=60)
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all(line["member"] == "solo" for line in lines)
    leading = next(line for line in lines if "became leader" in line["message"])
    assert leading["ballot"].startswith("1.") and leading["slot"] == 0
