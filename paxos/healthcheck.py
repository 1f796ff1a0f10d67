"""``python -m paxos.healthcheck``: the gRPC health probe, kept at its documented name (paxos/server/healthcheck.py)."""

import sys

from paxos.server.healthcheck import main

if __name__ == "__main__":
    sys.exit(main())
