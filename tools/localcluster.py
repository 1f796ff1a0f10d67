"""A whole paxoskv cluster on this machine, one subprocess per server.

``LocalCluster`` is what the launcher (``python -m paxos.local``, tools/local.py)
runs, and what the real-process tests start, kill, pause and restart servers
through.  Every server runs as
``python -m paxos -h DIR/hostfile.txt -n NAME --data-dir DIR/NAME --listen ADDR``
with its output in ``DIR/NAME.log``.  No server outlives the cluster object:
``stop()`` (also run by ``with`` and at interpreter exit) sends SIGTERM, waits,
then SIGKILLs, and on Linux each server is also killed by the kernel if the
thread that started it dies (PR_SET_PDEATHSIG), so even a SIGKILLed test run
or launcher leaves no orphans.  Start clusters from a long-lived thread (the
main thread in tests), because that thread's exit counts as the parent dying.
"""

from __future__ import annotations

import atexit
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from client import KVClient
from client.cli import find_leaders
from paxos.common.hostfile import parse_hostfile
from paxos.common.tlsfiles import BESIDE_HOSTFILE_DIR

DEFAULT_DIR = Path("local-cluster")
DEFAULT_NODES = 5
STOP_SECONDS = 5.0  # SIGTERM grace period before SIGKILL
STARTUP_SECONDS = 30.0
POLL_SECONDS = 0.2
STATUS_TIMEOUT = 1.0
LOG_TAIL_LINES = 20
HOSTFILE_NAME = "hostfile.txt"
# The checkout the servers import paxos from (tools/ sits at its top).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Runs in the child before the server: ask the kernel to SIGKILL it when its
# parent goes away, give up if that already happened, then become the server.
_DEATHSIG_SHIM = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


class ClusterError(RuntimeError):
    """The local cluster could not be brought to the requested state."""


class NodeExited(ClusterError):
    """A server stopped although nobody asked it to; the message has its log tail."""


@dataclass
class _Node:
    name: str
    listen: str
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    paused: bool = False


class LocalCluster:
    """N servers on 127.0.0.1, each a subprocess; a context manager.

    ``directory`` holds the hostfile, one data directory and one log per
    server.  An existing hostfile there is reused (so data survives restarts)
    if it lists ``nodes`` servers; otherwise a new one is written with free
    ports, or ports from ``base_port`` up.  ``server_args`` are appended to
    every server's command line (e.g. ``["--enable-fault-injection"]``), and
    ``node_args[name]`` to that one server's (e.g. a flag that differs
    between servers).  With ``tls``, certificates are made on first use in
    ``directory/tls`` (python -m paxos.certs), the servers serve TLS only and
    the cluster's clients use the client certificate; clients started
    elsewhere with ``-h directory/hostfile.txt`` find that directory by
    themselves.
    """

    def __init__(
        self,
        directory: str | Path = DEFAULT_DIR,
        nodes: int = DEFAULT_NODES,
        base_port: int | None = None,
        server_args: Sequence[str] = (),
        node_args: Mapping[str, Sequence[str]] | None = None,
        tls: bool = False,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least 1 server, got {nodes}")
        self.directory = Path(directory).resolve()
        self.hostfile = self.directory / HOSTFILE_NAME
        self.server_args = list(server_args)
        self.tls_dir: Path | None = None
        self.node_args = {name: list(args) for name, args in (node_args or {}).items()}
        self.reused_hostfile = self._prepare_hostfile(nodes, base_port)
        self.new_certificates: list[str] = []
        if tls:
            from paxos.certs import ensure_certificates  # cryptography: only when certificates are wanted

            self.tls_dir = self.directory / BESIDE_HOSTFILE_DIR
            self.new_certificates = ensure_certificates(self.hostfile, self.tls_dir)
            self.server_args = ["--tls-dir", str(self.tls_dir), *self.server_args]
        self._nodes = {m.name: _Node(m.name, m.address) for m in parse_hostfile(self.hostfile)}
        for name in self.node_args:
            self._node(name)  # a typo must not silently start a server without its flags

    # ------------------------------------------------------------ lifecycle

    @property
    def names(self) -> list[str]:
        return list(self._nodes)

    def address(self, name: str) -> str:
        return self._node(name).listen

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def data_dir(self, name: str) -> Path:
        return self.directory / name

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every server that is not running."""
        atexit.register(self.stop)
        for name in self._nodes:
            if not self.is_running(name):
                self.start_node(name)

    def stop(self, grace: float = STOP_SECONDS) -> None:
        """SIGTERM every server, wait up to ``grace`` seconds, SIGKILL the rest."""
        running = [n for n in self._nodes.values() if n.process is not None]
        for node in running:
            self._signal(node, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in running:
            self._reap(node, deadline)
        atexit.unregister(self.stop)

    def start_node(self, name: str) -> None:
        node = self._node(name)
        if self.is_running(name):
            raise ClusterError(f"{name} is already running (pid {node.process.pid if node.process else '?'})")
        self.data_dir(name).mkdir(parents=True, exist_ok=True)
        log = self.log_path(name).open("ab")
        log.write(f"=== paxos.local: starting {name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log.flush()
        node.process = subprocess.Popen(
            self._command(node),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,  # the terminal's Ctrl-C reaches only us; we stop the servers in order
        )
        node.log, node.paused = log, False

    def kill(self, name: str, sig: int = signal.SIGKILL, grace: float = STOP_SECONDS) -> int | None:
        """Send ``sig`` to a server and wait for it to exit (SIGKILL after ``grace``); its exit code."""
        node = self._node(name)
        if node.process is None:
            raise ClusterError(f"{name} is not running")
        self._signal(node, sig)
        return self._reap(node, time.monotonic() + grace)

    def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop a server with ``sig`` (SIGKILL for a crash) and start it again on the same data."""
        if self._node(name).process is not None:
            self.kill(name, sig)
        self.start_node(name)

    def pause(self, name: str) -> None:
        """Freeze a server (SIGSTOP): it keeps its sockets but answers nothing."""
        self._send(name, signal.SIGSTOP)
        self._node(name).paused = True

    def resume(self, name: str) -> None:
        self._send(name, signal.SIGCONT)
        self._node(name).paused = False

    def is_running(self, name: str) -> bool:
        process = self._node(name).process
        return process is not None and process.poll() is None

    def pid(self, name: str) -> int | None:
        process = self._node(name).process
        return process.pid if process is not None else None

    # ------------------------------------------------------------- waiting

    def client(self, timeout: float = 10.0) -> KVClient:
        return KVClient(parse_hostfile(self.hostfile), timeout=timeout, tls_dir=self.tls_dir)

    def check_alive(self) -> None:
        """Raise NodeExited if a server that should be running has exited."""
        for node in self._nodes.values():
            if node.process is not None and node.process.poll() is not None:
                code = node.process.returncode
                raise NodeExited(
                    f"{node.name} exited with code {code}; last lines of {self.log_path(node.name)}:\n"
                    + self.log_tail(node.name)
                )

    def reap_exited(self) -> list[tuple[str, int]]:
        """Servers that exited since the last call, as (name, exit code): reaped, logs closed, forgotten.

        A negative code is the signal that ended the server, as in ``Popen``.
        """
        exited = []
        for node in self._nodes.values():
            process = node.process
            if process is not None and process.poll() is not None:
                self._reap(node, time.monotonic())
                exited.append((node.name, process.returncode))
        return exited

    def running_count(self) -> int:
        return sum(1 for name in self._nodes if self.is_running(name))

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path(name).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(cannot read the log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_leader(self, timeout: float = STARTUP_SECONDS, progress: Callable[[str], None] | None = None) -> str:
        """Poll until a majority of the servers follow one leader; return its name.

        A lone server calling itself leader is not enough (a paused or
        partitioned old leader still does): the leader returned is one that
        a majority of the cluster names, so it can commit writes.  Raises
        NodeExited if a server dies meanwhile, ClusterError at the deadline.
        """
        deadline = time.monotonic() + timeout
        last_report = ""
        with self.client(timeout=STATUS_TIMEOUT) as kv:
            while True:
                self.check_alive()
                nodes = kv.status()
                leader = agreed_leader(nodes)
                if leader is not None:
                    return leader
                report = _describe_progress(nodes)
                if progress is not None and report != last_report:
                    progress(report)
                    last_report = report
                if time.monotonic() >= deadline:
                    raise ClusterError(f"no leader after {timeout:g}s ({report}); see the logs in {self.directory}")
                time.sleep(POLL_SECONDS)

    def wait_for_nodes(self, timeout: float = STARTUP_SECONDS, names: Sequence[str] | None = None) -> None:
        """Poll until every named server (default: all running ones) answers status; ClusterError at the deadline."""
        wanted = set(names if names is not None else [n for n in self._nodes if self.is_running(n)])
        deadline = time.monotonic() + timeout
        with self.client(timeout=STATUS_TIMEOUT) as kv:
            while True:
                self.check_alive()
                silent = sorted(wanted - {str(n["name"]) for n in kv.status() if n["reachable"]})
                if not silent:
                    return
                if time.monotonic() >= deadline:
                    raise ClusterError(f"{', '.join(silent)} not answering after {timeout:g}s; see {self.directory}")
                time.sleep(POLL_SECONDS)

    # ----------------------------------------------------------- machinery

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            raise ClusterError(f"no server named {name!r}; the cluster has {', '.join(self._nodes)}")
        return node

    def _command(self, node: _Node) -> list[str]:
        server = [
            "-m", "paxos",
            "-h", str(self.hostfile),
            "-n", node.name,
            "--data-dir", str(self.data_dir(node.name)),
            "--listen", node.listen,
            *self.server_args,
            *self.node_args.get(node.name, ()),
        ]  # fmt: skip
        if sys.platform.startswith("linux"):
            return [sys.executable, "-c", _DEATHSIG_SHIM, str(os.getpid()), *server]
        return [sys.executable, *server]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The servers import this checkout of paxos whatever the caller's cwd.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        return env

    def _send(self, name: str, sig: int) -> None:
        node = self._node(name)
        if not self.is_running(name):
            raise ClusterError(f"{name} is not running")
        self._signal(node, sig)

    def _signal(self, node: _Node, sig: int) -> None:
        if node.process is None or node.process.poll() is not None:
            return
        node.process.send_signal(sig)
        if node.paused and sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT):
            node.process.send_signal(signal.SIGCONT)  # a stopped process would hold the signal pending
            node.paused = False

    def _reap(self, node: _Node, deadline: float) -> int | None:
        """Wait for the server to exit until ``deadline``, then SIGKILL it; forget it."""
        process = node.process
        if process is None:
            return None
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if node.log is not None:
            node.log.close()
        node.process, node.log, node.paused = None, None, False
        return process.returncode

    def _prepare_hostfile(self, nodes: int, base_port: int | None) -> bool:
        """Reuse DIR/hostfile.txt if it fits, else write one; True when reused."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.hostfile.exists():
            members = parse_hostfile(self.hostfile)
            if len(members) != nodes:
                raise ClusterError(
                    f"{self.hostfile} lists {len(members)} servers, not {nodes}: "
                    f"use --nodes {len(members)}, another --dir, or delete {self.directory} to start afresh"
                )
            return True
        ports = list(range(base_port, base_port + nodes)) if base_port else free_ports(nodes)
        lines = [f"node{i} 127.0.0.1:{port}" for i, port in enumerate(ports, start=1)]
        header = "# Written by python -m paxos.local; reused while DIR keeps the servers' data.\n"
        self.hostfile.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
        return False


def agreed_leader(nodes: Sequence[Mapping[str, object]]) -> str | None:
    """The reachable leader that a majority of all servers name (itself included), if any."""
    majority = len(nodes) // 2 + 1
    for name in find_leaders(nodes):
        followers = sum(1 for n in nodes if n["reachable"] and (n["leader"] == name or n["name"] == name))
        if followers >= majority:
            return name
    return None


def _describe_progress(nodes: Sequence[Mapping[str, object]]) -> str:
    up = sum(1 for n in nodes if n["reachable"])
    roles = ", ".join(f"{n['name']} {n['role']}" for n in nodes)
    return f"{up}/{len(nodes)} servers answering: {roles}"


PORT_RANGE_ENV = "PAXOSKV_PORT_RANGE"  # LOW-HIGH: free_ports draws only from these ports


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (held open together, so all distinct).

    With ``$PAXOSKV_PORT_RANGE`` set to ``LOW-HIGH`` they come from that
    range, tried in turn from a random start; otherwise the kernel picks.
    Test runs in parallel give each worker a range of its own below the
    kernel's ephemeral ports, so that no other worker and no outgoing
    connection takes a port between the check here and a server's bind.
    """
    sockets: list[socket.socket] = []
    try:
        for port in _candidate_ports(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            if len(sockets) == count:
                return [sock.getsockname()[1] for sock in sockets]
        raise ClusterError(f"fewer than {count} free ports in ${PORT_RANGE_ENV}={os.environ.get(PORT_RANGE_ENV)}")
    finally:
        for sock in sockets:
            sock.close()


def _candidate_ports(count: int) -> Iterator[int]:
    spec = os.environ.get(PORT_RANGE_ENV, "")
    if not spec:
        yield from (0 for _ in range(count))  # the kernel's choice never repeats a held port
        return
    try:
        low, high = (int(part) for part in spec.split("-"))
    except ValueError:
        raise ClusterError(f"${PORT_RANGE_ENV} must be LOW-HIGH, not {spec!r}") from None
    if not 1024 <= low <= high <= 65535:
        raise ClusterError(f"${PORT_RANGE_ENV} must be LOW-HIGH within 1024-65535, not {spec!r}")
    span = high - low + 1
    start = random.randrange(span)
    for offset in range(span):
        yield low + (start + offset) % span
