"""``python -m paxos.local``: the local cluster launcher, kept at its documented name (tools/local.py)."""

import sys

from tools.local import main

if __name__ == "__main__":
    sys.exit(main())
