"""Log lines as text for people or as JSON for log collectors (``--log-format``).

In JSON every line is one object: ``time`` (ISO 8601, UTC), ``level``,
``logger``, ``member`` (this server's name), ``message``, and ``ballot`` and
``slot`` where the line is about one (the server passes them as ``extra``);
``exception`` holds a traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
# Attributes that log calls may attach with ``extra=`` and that JSON lines carry.
CONTEXT_FIELDS = ("ballot", "slot")


class JsonFormatter(logging.Formatter):
    def __init__(self, member: str) -> None:
        super().__init__()
        self.member = member

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "member": self.member,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value if isinstance(value, int) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str, member: str) -> None:
    """Send log lines to standard error in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(member))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
