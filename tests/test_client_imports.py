"""Every client command but the image ones starts without numpy, scipy and imagehash (a third of a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "scipy", "imagehash", "PIL", "client.images")


def modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_the_command_line_and_library_do_not_import_image_code() -> None:
    assert modules_after("import client, client.kv, client.cli, client.__main__") == []


def test_a_command_runs_without_image_code(tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("n1 127.0.0.1:1\n")
    code = f"from client import cli\ncli.main(['-h', {str(hostfile)!r}, '--timeout', '0.2', 'get', 'k'])"
    assert modules_after(code) == []


def test_image_code_is_there_when_asked_for() -> None:
    import client
    from client.images import ImageError

    assert client.ImageError is ImageError
    assert {"client.images", "imagehash", "numpy"} <= set(modules_after("from client import ImageError"))
