"""``python -m paxos.bench``: the load generator, kept at its documented name (tools/bench.py)."""

import sys

from tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
