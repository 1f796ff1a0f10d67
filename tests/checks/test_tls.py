"""An import contract of TLS: cryptography is loaded only when certificates are wanted."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import PROJECT


def test_a_plaintext_server_starts_without_loading_cryptography() -> None:
    probe = "import sys, paxos.__main__, client.cli; print('cryptography' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
