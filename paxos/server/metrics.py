"""Prometheus metrics and a ``/healthz`` probe for one server, over plain HTTP.

The core and the replica know nothing of this module: they keep plain
numbers (commit index, ``Node.refused``, pending writes) and the server
keeps a few more on its hot paths (paxos/server/stats.py:
``Histogram.observe`` and counter increments, nothing else).  At scrape
time ``ServerCollector`` reads them all, through ``ServerFigures``, and
builds the exposition, so a server nobody scrapes pays nothing for the
metrics but those increments.

``MetricsHttp`` answers ``GET /metrics`` (the Prometheus text format) and
``GET /healthz`` (200 while the server serves, 503 otherwise) from the
server's own event loop, so a health probe that gets an answer also proves
the loop is turning.  It is tiny on purpose: Docker's HEALTHCHECK probes it
with bash alone, without starting Python.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from paxos.common import limits
from paxos.consensus.core import Role
from paxos.consensus.messages import NodeId
from paxos.replica import Replica
from paxos.server.refusals import RefusalLog
from paxos.server.stats import Histogram, ServerStats
from paxos.storage.meta import DATA_FORMAT

log = logging.getLogger("paxos.metrics")

# Histogram lives in paxos/server/stats.py; it is still importable from here.
__all__ = ["Histogram", "MetricsHttp", "ServerFigures", "registry_for"]


class StorageFigures(Protocol):
    """What a scrape reads of the log and the snapshots."""

    fsync_seconds: Histogram
    snapshots_saved: int
    last_snapshot_seconds: float

    def log_bytes(self) -> int: ...


class LinkFigures(Protocol):
    """What a scrape reads of one outbound peer stream."""

    sent: int
    dropped_down: int
    dropped_full: int


class BudgetFigures(Protocol):
    """What a scrape reads of the session streams' shared bounds."""

    streams: int
    bytes: int


@dataclass(frozen=True)
class ServerFigures:
    """Where a scrape finds one server's numbers: plain objects, and a few callables for what changes."""

    replica: Replica
    stats: ServerStats
    storage: StorageFigures
    budget: BudgetFigures
    refusals: RefusalLog  # of peer messages
    links: Callable[[], Mapping[NodeId, LinkFigures]]
    name_of: Callable[[NodeId], str]
    membership_state: Callable[[], str]


class ServerCollector(Collector):
    """Reads one server's numbers when Prometheus scrapes; see the module docstring."""

    def __init__(self, figures: ServerFigures) -> None:
        self.f = figures

    def collect(self) -> Iterable[Metric]:
        f = self.f
        core, store, stats = f.replica.core, f.replica.store, f.stats
        yield _gauge("paxoskv_is_leader", "1 while this server is the leader, else 0", core.role is Role.LEADER)
        role = GaugeMetricFamily("paxoskv_role", "1 for this server's current role", labels=["role"])
        for each in Role:
            role.add_metric([each.value], float(core.role is each))
        yield role
        membership = GaugeMetricFamily(
            "paxoskv_membership", "1 for this server's place in the configuration", labels=["state"]
        )
        current = f.membership_state()
        for state in ("member", "learner", "joining", "removed"):
            membership.add_metric([state], float(current == state))
        yield membership
        yield _gauge(
            "paxoskv_configuration_voters", "voters in this server's configuration", len(core.membership.voters)
        )
        yield _gauge(
            "paxoskv_configuration_learners", "learners in this server's configuration", len(core.membership.learners)
        )
        yield _gauge(
            "paxoskv_cluster_version",
            "the cluster version applied here: what the members agreed to run (paxos/common/versions.py)",
            store.cluster_version,
        )
        yield _gauge(
            "paxoskv_max_cluster_version",
            "the highest cluster version this server reports it runs (its release, or --max-cluster-version)",
            f.replica.max_cluster_version,
        )
        yield _gauge("paxoskv_data_format", "the format of this server's data dir", DATA_FORMAT)
        yield _gauge("paxoskv_ballot_round", "round of the highest ballot this server has seen", core.ballot.round)
        yield _gauge("paxoskv_commit_index", "highest slot known chosen, with every slot below it", core.commit_index)
        yield _gauge("paxoskv_applied_index", "highest slot applied to the key-value store", store.applied_index)
        yield _gauge("paxoskv_pending_writes", "client writes waiting here for their slot", f.replica.pending_writes)
        yield _gauge("paxoskv_session_streams", "client session streams open on this server", f.budget.streams)
        yield _gauge(
            "paxoskv_session_unread_reply_bytes",
            "reply bytes the session streams hold for clients that have not read them yet",
            f.budget.bytes,
        )
        yield CounterMetricFamily(
            "paxoskv_leader_changes", "times the leader this server knows of changed", value=stats.leader_changes
        )
        yield _histogram(
            "paxoskv_wal_fsync_duration_seconds", "time one fsync of the write-ahead log took", f.storage.fsync_seconds
        )
        yield _histogram("paxoskv_slot_commands", "client commands in each applied slot", stats.slot_commands)
        yield _gauge(
            "paxoskv_snapshot_index",
            "the newest durable snapshot holds every slot up to here",
            f.replica.snapshot_index,
        )
        yield _gauge("paxoskv_log_bytes", "bytes in the write-ahead log's segment files", f.storage.log_bytes())
        yield CounterMetricFamily(
            "paxoskv_snapshots_written", "snapshots this server wrote of its own state", value=f.storage.snapshots_saved
        )
        yield CounterMetricFamily(
            "paxoskv_snapshots_installed",
            "snapshots this server fetched from a peer and installed",
            value=stats.snapshots_installed,
        )
        yield _gauge(
            "paxoskv_snapshot_freeze_seconds",
            "how long the latest snapshot held up the apply loop (taking its consistent copy)",
            stats.last_snapshot_freeze_seconds,
        )
        yield _gauge(
            "paxoskv_snapshot_write_seconds",
            "how long writing the latest snapshot took, off the apply loop",
            f.storage.last_snapshot_seconds,
        )
        yield _histogram(
            "paxoskv_session_batch_requests",
            "requests in each batch received on client session streams",
            stats.session_batch_requests,
        )
        yield from self._client_requests()
        yield from self._peer_messages()

    def _client_requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "paxoskv_client_requests",
            "client requests answered, by method and reply status",
            labels=["method", "status"],
        )
        for (method, status), count in sorted(self.f.stats.request_counts.items()):
            requests.add_metric([method, status], count)
        yield requests
        durations = HistogramMetricFamily(
            "paxoskv_client_request_duration_seconds", "time from request to reply, by method", labels=["method"]
        )
        for method, histogram in sorted(self.f.stats.request_seconds.items()):
            durations.add_metric([method], histogram.cumulative(), histogram.total)
        yield durations

    def _peer_messages(self) -> Iterator[Metric]:
        f = self.f
        messages = CounterMetricFamily(
            "paxoskv_peer_messages", "peer messages sent and received, by peer", labels=["peer", "direction"]
        )
        dropped = CounterMetricFamily(
            "paxoskv_peer_messages_dropped",
            "peer messages dropped: refused on the way in, or not sent (queue full, peer down)",
            labels=["peer", "reason"],
        )
        for peer, link in sorted(f.links().items()):
            name = f.name_of(peer)
            messages.add_metric([name, "sent"], link.sent)
            messages.add_metric([name, "received"], f.stats.received.get(peer, 0))
            if link.dropped_down:
                dropped.add_metric([name, "peer down"], link.dropped_down)
            if link.dropped_full:
                dropped.add_metric([name, "queue full"], link.dropped_full)
        # Refusals by the codec and by the core (Node.refused, reported
        # through the replica's observer) are both counted here by sender.
        for (peer_label, reason), count in sorted(f.refusals.counts.items()):
            dropped.add_metric([peer_label, reason], count)
        yield messages
        yield dropped


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=histogram.cumulative(), sum_value=histogram.total)


def registry_for(figures: ServerFigures) -> CollectorRegistry:
    """A registry of its own per server, so several servers in one process (tests) do not collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(figures))
    ProcessCollector(registry=registry)
    return registry


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT (HOST may be [v6]); ValueError with a one-line reason otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT with a port from 0 to 65535")
    return host.strip("[]") or "0.0.0.0", int(port_text)


class MetricsHttp:
    """``/metrics`` and ``/healthz`` over HTTP/1.0, on the server's event loop."""

    def __init__(self, registry: CollectorRegistry, serving: Callable[[], bool]) -> None:
        self._registry = registry
        self._serving = serving
        self._server: asyncio.Server | None = None
        # Connections still reading their request, oldest first, with when
        # they opened; and those writing their answer.
        self._reading: dict[asyncio.Task[None], float] = {}
        self._evicted: set[asyncio.Task[None]] = set()
        self._writing = 0
        self.port = 0

    async def start(self, address: str) -> None:
        host, port = parse_address(address)
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=limits.HTTP_MAX_REQUEST_BYTES, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        try:
            if len(self._reading) + self._writing >= limits.HTTP_MAX_CONNECTIONS and not self._evict_slowest(loop):
                return  # every place is taken by a request that is not slow (yet)
            self._reading[task] = loop.time()
            try:
                path = await asyncio.wait_for(_read_request(reader), limits.HTTP_READ_SECONDS)
            finally:
                self._reading.pop(task, None)
            self._writing += 1
            try:
                writer.write(self._answer(path))
                await asyncio.wait_for(writer.drain(), limits.HTTP_READ_SECONDS)
            finally:
                self._writing -= 1
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, oversized or broken request just loses its connection
        except asyncio.CancelledError:
            if task not in self._evicted:
                raise
            task.uncancel()  # gave its place to a newer request: just lose the connection
        finally:
            self._evicted.discard(task)
            writer.close()

    def _evict_slowest(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Close the oldest connection still reading its request, if it has been at it a while.

        A probe sends its request in one packet and is answered at once, so
        slow clients holding every place cannot keep /healthz from answering.
        """
        for task, opened in self._reading.items():
            if task in self._evicted:
                continue
            if loop.time() - opened < limits.HTTP_SLOW_REQUEST_SECONDS:
                return False
            self._evicted.add(task)
            del self._reading[task]
            task.cancel()
            return True
        return False

    def _answer(self, path: str | None) -> bytes:
        if path is None:
            return _response(400, "text/plain", b"bad request\n")
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return _response(200, CONTENT_TYPE_LATEST, generate_latest(self._registry))
        if path == "/healthz":
            if self._serving():
                return _response(200, "text/plain", b"SERVING\n")
            return _response(503, "text/plain", b"NOT_SERVING\n")
        return _response(404, "text/plain", b"try /metrics or /healthz\n")


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """The path of a GET request, after reading its headers; None if it is not one."""
    request_line = (await reader.readline()).decode("latin-1").split()
    for _ in range(limits.HTTP_MAX_HEADER_LINES):
        if (await reader.readline()).strip() == b"":
            break
    else:
        return None
    if len(request_line) < 2 or request_line[0] != "GET":
        return None
    return request_line[1]


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


def _response(code: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.0 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
