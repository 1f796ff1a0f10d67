"""``--log-format json`` from a real server process: every line an object naming the member.

The formatter itself, with plain calls, is tests/unit/test_logformat.py."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.harness import PROJECT
from tests.harness.cli import server_argv
from tests.harness.inprocess import free_port
from tests.harness.polling import wait_until


def test_a_server_logs_json_lines(tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile.txt"
    address = f"127.0.0.1:{free_port()}"
    hostfile.write_text(f"solo {address}\n")
    log_path = tmp_path / "solo.log"
    with log_path.open("wb") as log_file:
        command = server_argv(hostfile, "solo", tmp_path / "d", address)
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
