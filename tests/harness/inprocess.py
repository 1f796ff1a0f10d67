"""A small cluster of real PaxosServers in this process, on an event loop of its own thread.

Tests talk to it over loopback with ordinary blocking clients (gRPC, HTTP),
and poll it with tests/harness/polling.py.  Faster to start than separate processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from paxos.common.hostfile import Member
from paxos.server.service import PaxosServer
from paxos.server.tlsaccess import CLIENT_AUTH_CERT
from paxos.server.tlsserver import ServerTls
from tests.harness.loop import LoopThread
from tools.localcluster import free_ports

T = TypeVar("T")
STOP_SECONDS = 30.0


def free_port() -> int:
    return free_ports(1)[0]


class InProcessCluster:
    """``size`` servers; with ``tls_dir`` (made by paxos.certs for ``members``), all of them serve TLS.

    ``members``: the servers' names and addresses (default: s0, s1, ... on
    free ports); ``server_options``: more PaxosServer arguments;
    ``options_of``: more still for some servers, by name (read again by
    ``restart``, so a test may change them while a server is stopped).
    """

    def __init__(
        self,
        tmp_path: Path,
        size: int,
        tls_dir: Path | None = None,
        client_auth: str = CLIENT_AUTH_CERT,
        members: list[Member] | None = None,
        options_of: dict[str, dict[str, Any]] | None = None,
        **server_options: Any,
    ) -> None:
        ports = free_ports(2 * size)  # all distinct
        self.members = members or [Member(f"s{i}", "127.0.0.1", ports[i]) for i in range(size)]
        self.metrics = {m.name: f"127.0.0.1:{ports[size + i]}" for i, m in enumerate(self.members)}
        self._loop = LoopThread("cluster-loop")
        self.loop: asyncio.AbstractEventLoop = self._loop.loop
        self.tls_dir = tls_dir
        if tls_dir is not None:
            from paxos.certs import ensure_certificates

            hostfile = tmp_path / "hostfile.txt"
            hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in self.members))
            ensure_certificates(hostfile, tls_dir)
        self.tmp_path = tmp_path
        self.client_auth = client_auth
        self.server_options = server_options
        self.options_of = options_of or {}
        self.servers = {m.name: self._server(m.name) for m in self.members}
        self.stopped: set[str] = set()

    def _server(self, name: str) -> PaxosServer:
        tls = ServerTls(self.tls_dir, name, self.client_auth) if self.tls_dir is not None else None
        options = self.server_options | self.options_of.get(name, {})
        return PaxosServer(self.members, name, self.tmp_path / name, tls=tls, **options)

    def restart(self, name: str) -> None:
        """Start a stopped server again from its data dir, as a new process would."""
        assert name in self.stopped, f"{name} is running"
        member = next(m for m in self.members if m.name == name)
        self.servers[name] = server = self.call(self._server, name)
        self.run(server.start(member.address, self.metrics[name]))
        self.stopped.discard(name)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STOP_SECONDS) -> T:
        """Run ``coro`` on the cluster's loop and wait for its result."""
        return self._loop.run(coro, timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a plain function on the loop's thread (the servers are not thread-safe)."""
        return self._loop.call(fn, *args)

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
        self._loop.close(grace=0)  # the servers are stopped: what is left only waits to be cancelled

    def intact(self) -> str | None:
        """What a test changed of a cluster it was to leave as it found it, or None.

        Every server still runs and none has a partition set.
        """
        changes = [f"{name} stopped" for name in sorted(self.stopped)]
        for name, server in self.servers.items():
            if name not in self.stopped and self.call(lambda s=server: set(s.peers.blocked)):
                changes.append(f"{name} partitioned")
        return ", ".join(changes) or None


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
