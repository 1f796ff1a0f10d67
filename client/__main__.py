"""``python -m client -h HOSTFILE [COMMAND ...]``: the paxoskv command line (client/cli.py)."""

from __future__ import annotations

import sys

from client.cli import main

if __name__ == "__main__":
    sys.exit(main())
