"""Five real server processes on loopback, driven through the library and CLI.

The tests that only read and write share one cluster (each with keys of its
own); those that kill, pause or restart servers get a cluster each.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from client import KVError
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.cli import run_cli, run_cli_bytes, run_server
from tests.harness.polling import wait_until
from tests.harness.processes import applied_everywhere, own_connections_to, unread_by_server
from tools.localcluster import LocalCluster


def cli(cluster: LocalCluster, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return run_cli(cluster.hostfile, *args, timeout=timeout)


def test_set_get_delete_through_library(shared_cluster: LocalCluster) -> None:
    with shared_cluster.client() as kv:
        assert kv.get("fruit") is None
        kv.set("fruit", "green apple")
        assert kv.get("fruit") == "green apple"
        kv.set("fruit", "pear")
        assert kv.get("fruit") == "pear"
        assert kv.delete("fruit") is True
        assert kv.delete("fruit") is False
        assert kv.get("fruit") is None
        kv.set("ключ", "значение ✓")
        assert kv.get("ключ") == "значение ✓"


def test_cli_one_shot_commands_and_exit_codes(shared_cluster: LocalCluster) -> None:
    assert cli(shared_cluster, "set", "city", "New", "York").returncode == 0
    got = cli(shared_cluster, "get", "city")
    assert (got.returncode, got.stdout) == (0, "New York\n")
    missing = cli(shared_cluster, "get", "nowhere")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert cli(shared_cluster, "delete", "city").returncode == 0
    assert cli(shared_cluster, "get", "city").returncode == 1
    assert cli(shared_cluster, "set", "x" * 1025, "v").returncode == 2
    assert cli(shared_cluster, "frobnicate").returncode == 2


def test_cli_prompt_reads_commands_from_stdin(shared_cluster: LocalCluster) -> None:
    result = run_cli(shared_cluster.hostfile, timeout=None, input="set greeting hello there\nget greeting\nquit\n")
    assert result.returncode == 0
    assert "hello there" in result.stdout


def test_kill_leader_writes_resume_and_nothing_acknowledged_is_lost(cluster: LocalCluster) -> None:
    with cluster.client(timeout=20) as kv:
        for i in range(50):
            kv.set(f"k{i}", f"v{i}")
        leader = cluster.wait_for_leader()
        cluster.kill(leader, signal.SIGKILL)
        kv.set("after", "failover")
        new_leader = cluster.wait_for_leader()
        assert new_leader != leader
        assert kv.get("after") == "failover"
        for i in range(50):
            assert kv.get(f"k{i}") == f"v{i}"


def test_two_down_still_serves_three_down_fails_within_timeout(cluster: LocalCluster) -> None:
    names = cluster.names
    with cluster.client(timeout=20) as kv:
        kv.set("before", "1")
        cluster.kill(names[0])
        cluster.kill(names[1])
        kv.set("two-down", "2")
        assert kv.get("before") == "1"
        assert kv.get("two-down") == "2"
    cluster.kill(names[2])
    timeout = 3.0
    with cluster.client(timeout=timeout) as kv:
        started = time.monotonic()
        with pytest.raises(KVError):
            kv.set("three-down", "3")
        # A hang guard, not a speed check: the call must end near its timeout.
        assert time.monotonic() - started < timeout + 15
        with pytest.raises(KVError):
            kv.get("before")
    down = cli(cluster, "set", "three-down", "3", timeout=2)
    assert down.returncode == 3
    assert "unavailable" in down.stderr or "unknown" in down.stderr


def test_killed_server_restarts_from_its_log_and_catches_up(cluster: LocalCluster) -> None:
    victim = cluster.names[-1]
    with cluster.client(timeout=20) as kv:
        kv.set("early", "1")
        wait_until(lambda: applied_everywhere(kv, cluster.names), what="every server to apply 'early'")
        cluster.kill(victim)
        for i in range(100):
            kv.set(f"missed{i}", str(i))
        cluster.start_node(victim)
        wait_until(lambda: applied_everywhere(kv, cluster.names), what=f"{victim} to catch up")
        victim_stub = _stub(cluster, victim)
        reply = victim_stub.Get(kv_pb2.GetRequest(key="missed99", consistency=kv_pb2.LOCAL), timeout=5)
        assert (reply.found, reply.value) == (True, "99")


def test_all_five_killed_and_restarted_keep_every_acknowledged_write(cluster: LocalCluster) -> None:
    acknowledged = {}
    with cluster.client(timeout=20) as kv:
        for i in range(200):
            kv.set(f"durable{i}", f"value{i}")
            acknowledged[f"durable{i}"] = f"value{i}"
    for name in cluster.names:
        cluster.kill(name, signal.SIGKILL)
    cluster.start()
    cluster.wait_for_leader(timeout=60)
    with cluster.client(timeout=20) as kv:
        for key, value in acknowledged.items():
            assert kv.get(key) == value


def test_retried_write_is_applied_once(shared_cluster: LocalCluster) -> None:
    leader = shared_cluster.wait_for_leader()
    stub = _stub(shared_cluster, leader)
    registered = stub.Register(kv_pb2.RegisterRequest(), timeout=10)
    assert registered.status == kv_pb2.OK
    session = registered.session_id
    first = kv_pb2.Command(session_id=session, seq=1, first_unacked=1, set=kv_pb2.SetOp(key="retried", value="first"))
    assert stub.Write(kv_pb2.WriteRequest(command=first), timeout=10).status == kv_pb2.OK
    with shared_cluster.client() as kv:
        kv.set("retried", "second")
        # The first write arrives again, as after a client timeout: no effect.
        assert stub.Write(kv_pb2.WriteRequest(command=first), timeout=10).status == kv_pb2.OK
        assert kv.get("retried") == "second"
        removal = kv_pb2.Command(session_id=session, seq=2, first_unacked=2, delete=kv_pb2.DeleteOp(key="retried"))
        replies = [stub.Write(kv_pb2.WriteRequest(command=removal), timeout=10) for _ in range(3)]
        assert [r.removed for r in replies] == [True, True, True]
        assert kv.get("retried") is None


def test_paused_leader_never_serves_a_stale_read(cluster: LocalCluster) -> None:
    with cluster.client(timeout=20) as kv:
        kv.set("color", "red")
        old = cluster.wait_for_leader()
        stub = _stub(cluster, old)
        port = int(cluster.address(old).rsplit(":", 1)[1])
        others = own_connections_to(port)
        stub.Status(kv_pb2.StatusRequest(), timeout=10)  # connected before the pause
        connection = own_connections_to(port) - others
        assert connection, f"no new connection from this process to port {port}"
        cluster.pause(old)
        try:
            kv.set("color", "blue")
            wait_until(lambda: cluster.wait_for_leader() != old, what="a new leader")
            # Sent while it sleeps, so that on waking the read may be served
            # before its ticker runs: its lease must be judged by the real
            # clock.  It is resumed only once the request waits unread in its
            # socket: the stub's connection carries nothing else, and no
            # control frame is as long as the request's DATA frame alone.
            request = kv_pb2.GetRequest(key="color")
            data_frame = 9 + 5 + request.ByteSize()  # HTTP/2 frame header, gRPC message prefix, message
            unread = unread_by_server(port, connection)
            early = stub.Get.future(request, timeout=20)
            wait_until(
                lambda: unread_by_server(port, connection) >= unread + data_frame,
                what=f"the read to reach {old}'s socket while it is paused",
                timeout=10,
                interval=0.01,
            )
        finally:
            cluster.resume(old)
        late = stub.Get(kv_pb2.GetRequest(key="color"), timeout=10)
        # The woken leader either redirects or, if it somehow leads again, is current.
        for reply in (early.result(), late):
            assert reply.status != kv_pb2.OK or reply.value == "blue"
        assert kv.get("color") == "blue"


def test_unreachable_cluster_exits_3_and_names_addresses(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("a 127.0.0.1:1\nb 127.0.0.1:2\n")
    result = run_cli(hostfile, "get", "k", timeout=1)
    assert result.returncode == 3
    assert "127.0.0.1:1" in result.stderr and "127.0.0.1:2" in result.stderr


def test_data_dir_of_another_server_is_refused(cluster: LocalCluster) -> None:
    names = cluster.names
    cluster.wait_for_nodes(timeout=60)  # a server still starting may not have stamped its data dir yet
    cluster.kill(names[1], signal.SIGTERM)  # while it runs, its lock refuses the directory first
    result = run_server(cluster.hostfile, names[0], cluster.data_dir(names[1]))
    assert result.returncode == 4
    assert f"belongs to server '{names[1]}'" in result.stderr


def test_corrupt_middle_record_stops_server_with_clear_message(cluster: LocalCluster) -> None:
    victim = cluster.names[0]
    with cluster.client() as kv:
        for i in range(20):
            kv.set(f"c{i}", "x" * 100)
        wait_until(lambda: applied_everywhere(kv, cluster.names), what="every server to apply")
    cluster.kill(victim, signal.SIGTERM)
    segment = sorted((cluster.data_dir(victim) / "wal").glob("*.wal"))[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    cluster.start_node(victim)
    wait_until(lambda: not cluster.is_running(victim), what=f"{victim} to refuse its damaged log")
    log = cluster.log_tail(victim)
    assert "damaged record at byte" in log and str(segment) in log


def _stub(cluster: LocalCluster, name: str) -> kv_pb2_grpc.KVStub:
    channel = grpc.insecure_channel(cluster.address(name))
    return kv_pb2_grpc.KVStub(channel)


def test_large_multiline_values_from_stdin_and_files(shared_cluster: LocalCluster, tmp_path: Path) -> None:
    # Larger than one command-line argument may be (128 KiB), with every kind of line ending.
    value = "".join(f"line {i}: {'x' * 90}\r\n" if i % 3 else f"line {i}\n" for i in range(6000))
    assert 128 * 1024 < len(value.encode()) < 1024 * 1024
    stored = run_cli(shared_cluster.hostfile, "set", "from-stdin", "-", input=value, timeout=20)
    assert stored.returncode == 0, stored.stderr
    path = tmp_path / "value.txt"
    path.write_bytes(value.encode())
    assert cli(shared_cluster, "set", "from-file", "--file", str(path), timeout=20).returncode == 0
    for key in ("from-stdin", "from-file"):
        got = run_cli_bytes(shared_cluster.hostfile, "get", key, timeout=20)
        assert got.returncode == 0
        assert got.stdout == value.encode() + b"\n"  # the value, then the newline get prints after it
    piped = run_cli(shared_cluster.hostfile, input="get never-written\nset piped v\n", timeout=20)
    assert piped.returncode == 1, "a piped script exits with its first failure's code"
