"""A small cluster of real PaxosServers in this process, on an event loop of its own thread.

Tests talk to it over loopback with ordinary blocking clients (gRPC, HTTP),
and poll it with tests/polling.py.  Faster to start than separate processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from paxos.common.hostfile import Member
from paxos.server.service import PaxosServer
from paxos.server.tlsaccess import CLIENT_AUTH_CERT
from paxos.server.tlsserver import ServerTls
from tools.localcluster import free_ports

T = TypeVar("T")
STOP_SECONDS = 30.0


def free_port() -> int:
    return free_ports(1)[0]


class InProcessCluster:
    """``size`` servers; with ``tls_dir`` (made by paxos.certs for ``members``), all of them serve TLS.

    ``members``: the servers' names and addresses (default: s0, s1, ... on
    free ports); ``server_options``: more PaxosServer arguments.
    """

    def __init__(
        self,
        tmp_path: Path,
        size: int,
        tls_dir: Path | None = None,
        client_auth: str = CLIENT_AUTH_CERT,
        members: list[Member] | None = None,
        **server_options: Any,
    ) -> None:
        ports = free_ports(2 * size)  # all distinct
        self.members = members or [Member(f"s{i}", "127.0.0.1", ports[i]) for i in range(size)]
        self.metrics = {m.name: f"127.0.0.1:{ports[size + i]}" for i, m in enumerate(self.members)}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cluster-loop", daemon=True)
        self._thread.start()
        self.tls_dir = tls_dir
        if tls_dir is not None:
            from paxos.certs import ensure_certificates

            hostfile = tmp_path / "hostfile.txt"
            hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in self.members))
            ensure_certificates(hostfile, tls_dir)
        self.tmp_path = tmp_path
        self.client_auth = client_auth
        self.server_options = server_options
        self.servers = {m.name: self._server(m.name) for m in self.members}
        self.stopped: set[str] = set()

    def _server(self, name: str) -> PaxosServer:
        tls = ServerTls(self.tls_dir, name, self.client_auth) if self.tls_dir is not None else None
        return PaxosServer(self.members, name, self.tmp_path / name, tls=tls, **self.server_options)

    def restart(self, name: str) -> None:
        """Start a stopped server again from its data dir, as a new process would."""
        assert name in self.stopped, f"{name} is running"
        member = next(m for m in self.members if m.name == name)
        self.servers[name] = server = self.call(self._server, name)
        self.run(server.start(member.address, self.metrics[name]))
        self.stopped.discard(name)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STOP_SECONDS) -> T:
        """Run ``coro`` on the cluster's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """Call a plain function on the loop's thread (the servers are not thread-safe)."""

        async def called() -> Any:
            return fn(*args)

        return self.run(called())

    def start(self) -> None:
        for member in self.members:
            self.run(self.servers[member.name].start(member.address, self.metrics[member.name]))

    def stop(self, name: str) -> None:
        if name not in self.stopped:
            self.stopped.add(name)
            self.run(self.servers[name].stop())

    def leader(self) -> str | None:
        leaders = [n for n, s in self.servers.items() if n not in self.stopped and self.call(s.core.is_leader)]
        return leaders[0] if len(leaders) == 1 else None

    def close(self) -> None:
        for name in self.servers:
            self.stop(name)
        self.run(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_SECONDS)
        self.loop.close()


async def _cancel_the_rest() -> None:
    """What gRPC left running (a peer stream's request pump) ends before the loop closes."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@contextmanager
def in_process_cluster(
    tmp_path: Path,
    size: int = 3,
    tls_dir: Path | None = None,
    client_auth: str = CLIENT_AUTH_CERT,
    **server_options: Any,
) -> Iterator[InProcessCluster]:
    cluster = InProcessCluster(tmp_path, size, tls_dir, client_auth, **server_options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
