"""The plain numbers a server keeps on its hot paths, for the metrics and the status to read.

Keeping them costs an increment or a ``Histogram.observe`` (one bisect and
two additions); they are turned into Prometheus metrics only when scraped
(paxos/server/metrics.py).  Everything here runs on the server's event loop.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from paxos.common import limits
from paxos.consensus.messages import NodeId
from protos import kv_pb2

# Bucket bounds.  An fsync on an SSD takes well under a millisecond to a few
# ms; past 10 ms the log is the bottleneck (docs/operations.md).
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Commands per slot: one per slot means no batching; a full batch is
# limits.MAX_BATCH_COMMANDS.
SLOT_COMMAND_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, limits.MAX_BATCH_COMMANDS)
SESSION_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, limits.MAX_SESSION_BATCH_REQUESTS)


@dataclass(slots=True)
class Histogram:
    """Bucket counts and a sum, for the collector to expose; ``observe`` is one bisect and two additions."""

    bounds: Sequence[float]
    counts: list[int] = field(init=False)  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets


class ServerStats:
    """What the server counts of its own work: leaders seen, snapshots, client requests, peer messages."""

    def __init__(self) -> None:
        self.started = time.monotonic()  # since when the server serves (set again when it starts)
        self.leader_changes = 0
        self.snapshots_installed = 0
        self.last_snapshot_freeze_seconds = 0.0
        self.longest_snapshot_freeze_seconds = 0.0
        self.slot_commands = Histogram(SLOT_COMMAND_BUCKETS)
        self.session_batch_requests = Histogram(SESSION_BATCH_BUCKETS)
        self.requests_served = 0
        self.received: Counter[NodeId] = Counter()  # peer messages taken in, by sender
        self.request_counts: Counter[tuple[str, str]] = Counter()
        # Every method's series exist from the start, so a follower that has
        # answered nothing still shows them (at zero).
        # (A session stream's requests count under their unary twins' names.)
        self.request_seconds = {
            name: Histogram(REQUEST_BUCKETS)
            for name, method in kv_pb2.DESCRIPTOR.services_by_name["KV"].methods_by_name.items()
            if not method.client_streaming
        }
        self.request_counts.update(dict.fromkeys(((m, "OK") for m in self.request_seconds), 0))

    def note_request(self, method: str, status: str, seconds: float) -> None:
        """A client request answered (``status`` is the reply's, by name) after ``seconds``."""
        self.requests_served += 1
        self.request_counts[method, status] += 1
        histogram = self.request_seconds.get(method)
        if histogram is None:
            histogram = self.request_seconds[method] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)

    def snapshot_frozen(self, seconds: float) -> None:
        """A snapshot's consistent copy held up the apply loop for ``seconds``."""
        self.last_snapshot_freeze_seconds = seconds
        self.longest_snapshot_freeze_seconds = max(self.longest_snapshot_freeze_seconds, seconds)
