"""Clusters of real server processes (tools.localcluster.LocalCluster) as the tests start and watch them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client import KVClient
from tools.localcluster import LocalCluster, NodeExited

START_SECONDS = 60.0  # a loaded machine starts five servers slowly


@contextmanager
def running_cluster(directory: Path, nodes: int, **options: Any) -> Iterator[LocalCluster]:
    """``nodes`` servers in ``directory``, each answering and one of them leading; all stopped at the end.

    ``options`` are LocalCluster's (``tls``, ``server_args``, ``node_args``).
    """
    with LocalCluster(directory, nodes=nodes, **options) as cluster:
        cluster.wait_for_nodes(timeout=START_SECONDS)
        cluster.wait_for_leader(timeout=START_SECONDS)
        yield cluster


def intact(cluster: LocalCluster) -> str | None:
    """What a test changed of a cluster it was to leave as it found it, or None: every server still runs."""
    try:
        cluster.check_alive()
    except NodeExited as exited:
        return str(exited)  # a server that stopped by itself: its exit code and log tail
    stopped = [name for name in cluster.names if not cluster.is_running(name)]
    return ", ".join(f"{name} not running" for name in stopped) or None


def applied_everywhere(kv: KVClient, names: list[str]) -> bool:
    """Whether one leader is agreed and each named server has applied up to its commit index."""
    nodes = {str(n["name"]): n for n in kv.status()}
    leaders = [n for n in nodes.values() if n["role"] == "leader"]
    if len(leaders) != 1:
        return False
    target = int(str(leaders[0]["commit_index"]))
    return all(nodes[name]["reachable"] and int(str(nodes[name]["applied_index"])) >= target for name in names)


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# ------------------------------------------------------- loopback sockets

_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_ESTABLISHED = "01"


def _tcp_connections() -> list[tuple[int, int, int, int]]:
    """Every established TCP connection of this network namespace: (local port, remote port, unread bytes, inode)."""
    rows = []
    for table in _TCP_TABLES:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != _ESTABLISHED:
                continue
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            unread = int(fields[4].split(":")[1], 16)
            rows.append((local, remote, unread, int(fields[9])))
    return rows


def own_connections_to(port: int) -> set[int]:
    """The local ports of this process's TCP connections to ``port`` (on this machine)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return {local for local, remote, _, inode in _tcp_connections() if remote == port and inode in inodes}


def unread_by_server(port: int, client_ports: set[int]) -> int:
    """Bytes that reached the server's end (``port``) of these clients' connections and that it has not read yet."""
    return sum(unread for local, remote, unread, _ in _tcp_connections() if local == port and remote in client_ports)
