"""``--log-format json``: one JSON object per log line, with member, ballot and slot.

A real server logging so is tests/processes/test_logformat.py."""

from __future__ import annotations

import json
import logging
import sys

from paxos.common.logformat import JsonFormatter


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
