"""No client can exhaust a server: real servers on loopback under hostile clients.

Each test runs three servers as processes, points a hostile load at the
leader from a child process (so the test's own memory and file descriptors
stay out of it) and checks, while it lasts, that the leader stays within
its bounds and keeps serving everyone else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from paxos.common import limits
from protos import kv_pb2, kv_pb2_grpc
from tests.harness import PROJECT
from tests.harness.cli import run_cli
from tests.harness.polling import wait_until
from tests.harness.processes import rss_bytes, running_cluster
from tools.localcluster import LocalCluster, free_ports

RSS_LIMIT_BYTES = 500 * 1000 * 1000


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 3}


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def _new_client_sets(cluster: LocalCluster, key: str, value: str) -> subprocess.CompletedProcess[str]:
    """``set`` from a new client process: in this one gRPC would reuse the connections made earlier."""
    return run_cli(cluster.hostfile, "set", key, value, timeout=30)


def _leader(cluster: LocalCluster) -> str:
    with cluster.client(timeout=10.0) as kv:
        return wait_until(
            lambda: next((str(n["name"]) for n in kv.status() if n["role"] == "leader"), None), "a leader", 30
        )


class _Hostile:
    """A child process running ``script`` (Python) with the given arguments; killed on exit."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.said: list[str] = []

    def ready_reader(self) -> threading.Thread:
        """A thread that ends once the child has said "ready" (or ended)."""
        stdout = self.process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: self.said.append(stdout.readline()), daemon=True)
        reader.start()
        return reader

    def wait_ready(self, timeout: float) -> None:
        """Wait for the child's line "ready"."""
        self.ready_reader().join(timeout)
        said = self.said
        assert said and said[0].strip() == "ready", f"hostile client not ready: {said} (exit {self.process.poll()})"

    def __enter__(self) -> _Hostile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


# ------------------------------------------------------ replies nobody reads

_NON_READING = """
    import asyncio, sys
    import grpc
    from protos import kv_pb2, kv_pb2_grpc

    async def main(address: str, streams: int, batches: int) -> None:
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        calls = []
        for _ in range(streams):
            channel = grpc.aio.insecure_channel(address, options=options)
            calls.append(kv_pb2_grpc.KVStub(channel).Session())
        get = kv_pb2.GetRequest(key="big", consistency=kv_pb2.LOCAL)
        sends = []
        for call in calls:
            for b in range(batches):
                batch = kv_pb2.SessionBatch(
                    requests=[kv_pb2.SessionRequest(id=b * 1024 + i + 1, get=get) for i in range(1024)]
                )
                sends.append(call.write(batch))
        # Each stream's first batch is written before "ready"; the rest go as the server reads them.
        rest = asyncio.gather(*sends, return_exceptions=True)
        await asyncio.sleep(1.0)
        print("ready", flush=True)
        await rest
        await asyncio.sleep(3600)  # and never read a reply

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_replies_nobody_reads_stay_bounded_while_others_are_served(cluster: LocalCluster) -> None:
    leader = _leader(cluster)
    pid = cluster.pid(leader)
    assert pid is not None
    value = "v" * limits.DEFAULT_MAX_VALUE_BYTES
    with cluster.client(timeout=10.0) as kv:
        kv.set("big", value)
        kv.set("writer", "0")
    wait_until(lambda: _leader(cluster) == leader, "the leader to stay put", 10)
    peak = rss_bytes(pid)
    with (
        _Hostile(_NON_READING, cluster.address(leader), "20", "4") as hostile,
        cluster.client(timeout=10.0) as kv,
        grpc.insecure_channel(cluster.address(leader)) as channel,
    ):
        hostile.wait_ready(timeout=30)
        status = kv_pb2_grpc.KVStub(channel).Status
        writes = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes(pid))
            assert peak < RSS_LIMIT_BYTES, f"the leader grew to {peak / 1e6:.0f} MB of RSS"
            status(kv_pb2.StatusRequest(), timeout=1.0)
            writes += 1
            kv.set("writer", str(writes))
        assert hostile.process.poll() is None, "the hostile client died early: the test proved nothing"
    assert writes >= 10, f"only {writes} writes in 20 s beside the non-reading streams"
    print(f"leader peak RSS {peak / 1e6:.0f} MB, {writes} writes")


# ------------------------------------------------------ slow HTTP clients

_SLOW_HTTP = """
    import asyncio, sys

    async def slow(port: int) -> None:
        while True:  # as soon as the server closes one, open another
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /metrics HTTP/1.0\\r\\n")
                while True:
                    await asyncio.sleep(1.0)
                    writer.write(b"X-Slow: one header a second\\r\\n")
                    await writer.drain()
                    if reader.at_eof():
                        break
            except OSError:
                await asyncio.sleep(0.05)

    async def main(port: int, connections: int) -> None:
        tasks = [asyncio.create_task(slow(port)) for _ in range(connections)]
        await asyncio.sleep(2.0)
        print("ready", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def _healthz(port: int, timeout: float) -> bool:
    """What Docker's HEALTHCHECK does: one request, the status line within ``timeout``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return conn.makefile("rb").readline().split()[1:2] == [b"200"]
    except OSError:
        return False


def test_healthz_answers_while_slow_http_clients_hold_connections(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    with running_cluster(tmp_path / "one", nodes=1, server_args=["--metrics", f"127.0.0.1:{port}"]):
        wait_until(lambda: _healthz(port, 4.0), "/healthz to answer", 30)
        with _Hostile(_SLOW_HTTP, str(port), "40") as hostile:
            hostile.wait_ready(timeout=30)
            failed = []
            for probe in range(20):
                if not _healthz(port, 4.0):
                    failed.append(probe)
                time.sleep(0.25)  # probes spread over the slow clients' cycles
            assert hostile.process.poll() is None, "the slow clients died early: the test proved nothing"
        assert not failed, f"{len(failed)} of 20 /healthz probes failed beside 40 slow clients"


# ------------------------------------------------------ idle connections

_IDLE_CONNECTIONS = """
    import selectors, socket, sys, time

    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    selector = selectors.DefaultSelector()
    connecting: set[socket.socket] = set()

    def connect() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, int(port)))
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        connecting.add(sock)

    def serve(timeout: float) -> None:
        for key, events in selector.select(timeout=timeout):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                connecting.discard(sock)
                selector.modify(sock, selectors.EVENT_READ)
            if not events & selectors.EVENT_READ:
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:  # closed by the server: open another
                connecting.discard(sock)
                selector.unregister(sock)
                sock.close()
                connect()

    # A few hundred at a time, so that the server's accept queue never overflows.
    for chunk in range(0, count, 200):
        for _ in range(min(200, count - chunk)):
            connect()
        give_up = time.monotonic() + 1.0
        while connecting and time.monotonic() < give_up:
            serve(0.1)
    print("ready", flush=True)
    while True:  # hold them
        serve(1.0)
"""

IDLE_CONNECTIONS = 20_100


def test_writes_resume_while_idle_connections_fill_the_leaders_descriptors(cluster: LocalCluster) -> None:
    leader = _leader(cluster)
    with cluster.client(timeout=10.0) as kv:
        kv.set("before", "flood")
    # Spread over processes: each may hold no more descriptors than a server.
    processes = 3
    pid = cluster.pid(leader)
    assert pid is not None
    with ExitStack() as stack:
        flooded = time.monotonic()
        address, share = cluster.address(leader), str(IDLE_CONNECTIONS // processes)
        hostiles = [stack.enter_context(_Hostile(_IDLE_CONNECTIONS, address, share)) for _ in range(processes)]
        # Until every connection was opened once, the leader's descriptors ran
        # out (as they did before it closed idle connections), or 20 s passed.
        readers = [h.ready_reader() for h in hostiles]
        counts = wait_until(
            lambda: (
                (all(not r.is_alive() for r in readers) or _open_fds(pid) >= 19_900 or time.monotonic() > flooded + 20)
                and [_open_fds(pid)]
            ),
            "the flood to fill the leader",
            timeout=30,
            interval=0.5,
        )
        full = time.monotonic()
        print(f"{full - flooded:.1f} s after the flood began the leader held {counts[0]} descriptors")
        written = _new_client_sets(cluster, "during", "flood")
        resumed = time.monotonic() - full
        assert written.returncode == 0, written.stdout + written.stderr
        assert all(h.process.poll() is None for h in hostiles), "the connections were not held: the test proved nothing"
    assert resumed < 10.0, f"the first write took {resumed:.1f} s beside {IDLE_CONNECTIONS} idle connections"
    print(f"first write after {resumed:.1f} s; leader was {leader}, now {_leader(cluster)}")


# ------------------------------------------------------ a leader clients cannot reach

_IDLE_CHANNELS = """
    import sys, time
    import grpc

    address, count = sys.argv[1], int(sys.argv[2])
    # A subchannel pool of its own per channel: one connection each.
    channels = [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]
    for channel in channels:
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
        except grpc.FutureTimeoutError:
            break  # refused: the server is at its cap
    print("ready", flush=True)
    time.sleep(3600)  # hold them, idle
"""

CAP = 100


def test_a_leader_whose_connections_are_all_taken_hands_leadership_over(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "cluster", nodes=3, server_args=["--max-connections", str(CAP)]) as cluster:
        leader = _leader(cluster)
        with cluster.client(timeout=10.0) as kv:
            kv.set("before", "full")
        with _Hostile(_IDLE_CHANNELS, cluster.address(leader), str(CAP + 10)) as hostile:
            hostile.wait_ready(timeout=60)
            held = time.monotonic()
            # Nothing in this process may talk to the leader meanwhile: that would be service.
            written = _new_client_sets(cluster, "during", "full")
            resumed = time.monotonic() - held
            assert written.returncode == 0, written.stdout + written.stderr
            assert hostile.process.poll() is None, "the connections were not held: the test proved nothing"
        assert "handing leadership over" in cluster.log_tail(leader, 200)
        assert _leader(cluster) != leader
    assert resumed < 10.0, f"the first write took {resumed:.1f} s while the leader's connections were all taken"
    print(f"first write after {resumed:.1f} s")
