"""A server that lost its data is never trusted again (data-dir incarnations), on real processes.

A follower's data dir is lost while the other follower lags: restarted with
its usual command line, the server must not come back as the same member
with an empty log, or it and the lagging follower would make a majority
that never saw an acknowledged write.

The lagging follower is cut off with fault injection rather than stopped
with SIGSTOP: a stopped process still receives the leader's accepts into
its socket buffers and takes them in when it is continued, so it would not
lag at all.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import grpc
import pytest

from client import KVClient
from client.retry import KVError
from paxos.common.hostfile import parse_hostfile
from protos import peer_pb2, peer_pb2_grpc
from tests.harness.polling import wait_until
from tools.localcluster import LocalCluster

EXIT_DATA = 4
REPAIR = "python -m client members remove"


def _exit_code(cluster: LocalCluster, name: str) -> int | None:
    for exited, code in cluster.reap_exited():
        if exited == name:
            return code
    return None


def _stale_get(cluster: LocalCluster, name: str, key: str) -> str | None:
    member = next(m for m in parse_hostfile(cluster.hostfile) if m.name == name)
    with KVClient([member], timeout=2.0) as one:
        try:
            return one.get(key, consistency="local")
        except KVError:
            return None


def _block(cluster: LocalCluster, name: str, peers: list[str]) -> None:
    """Make ``name`` drop all traffic with ``peers`` (none: heal it)."""
    with grpc.insecure_channel(cluster.address(name)) as channel:
        peer_pb2_grpc.PeerStub(channel).SetPartition(peer_pb2.Partition(blocked=peers), timeout=10)


def _reads_for(cluster: LocalCluster, key: str, seconds: float) -> set[str | None]:
    """The distinct answers of linearizable reads of ``key`` tried for ``seconds`` (none while no quorum answers)."""
    answers: set[str | None] = set()
    deadline = time.monotonic() + seconds
    with cluster.client(timeout=1.0) as kv:
        while time.monotonic() < deadline:
            try:
                answers.add(kv.get(key))
            except KVError:
                continue
            time.sleep(0.1)
    return answers


def _try(action: object) -> bool:
    try:
        action()  # type: ignore[operator]
    except KVError:
        return False
    return True


def test_a_follower_that_lost_its_data_dir_is_refused_and_can_be_replaced(tmp_path: Path) -> None:
    faults = ["--enable-fault-injection"]
    with LocalCluster(tmp_path / "cluster", nodes=3, server_args=faults) as cluster, cluster.client(10.0) as kv:
        a = cluster.wait_for_leader(timeout=30)
        b, c = [n for n in cluster.names if n != a]
        kv.set("warm-up", "1")  # every server has heard from every other by now
        wait_until(lambda: _stale_get(cluster, c, "warm-up") == "1", f"{c} to apply the warm-up write")

        _block(cluster, c, [a, b])
        kv.set("W", "acknowledged-value")  # acknowledged by a and b only
        cluster.kill(a, signal.SIGKILL)
        cluster.kill(b, signal.SIGKILL)
        shutil.rmtree(cluster.data_dir(b))  # a lost volume
        cluster.start_node(b)  # its usual command line, no --join
        _block(cluster, c, [])

        # b takes no part, so b and c make no majority: a read finds no
        # quorum rather than a cluster without W.
        answers = _reads_for(cluster, "W", seconds=8.0)
        assert answers <= {"acknowledged-value"}, f"a majority that never saw W answered {answers}"
        # It waits for answers, or has already been told by c.
        wait_until(
            lambda: not cluster.is_running(b) or "not founding the cluster yet" in cluster.log_tail(b),
            f"{b} to wait before founding",
            timeout=20,
        )
        assert not (cluster.data_dir(b) / "paxoskv-meta.json").exists(), "it founded a cluster"
        cluster.start_node(a)
        code = wait_until(lambda: _exit_code(cluster, b), f"{b} to refuse to start", timeout=20)
        assert code == EXIT_DATA
        assert f"{REPAIR} {b}" in cluster.log_tail(b)
        assert "--join" in cluster.log_tail(b)

        assert kv.get("W") == "acknowledged-value"  # linearizable
        for name in (a, c):
            wait_until(lambda n=name: _stale_get(cluster, n, "W") == "acknowledged-value", f"W on {name}")

        # The repair: remove b, then add it back on an empty data dir with --join.
        wait_until(lambda: _try(lambda: kv.remove_member(b)), f"{b} to be removed", timeout=20)
        shutil.rmtree(cluster.data_dir(b), ignore_errors=True)
        cluster.node_args[b] = ["--join"]
        cluster.start_node(b)
        wait_until(lambda: _try(lambda: kv.add_member(b, cluster.address(b))), f"{b} to be added", timeout=20)
        wait_until(lambda: _try(lambda: kv.promote_member(b)), f"{b} to be promoted", timeout=20)
        wait_until(lambda: _stale_get(cluster, b, "W") == "acknowledged-value", f"W on the new {b}")
        cluster.check_alive()


def test_a_follower_whose_log_was_deleted_is_refused_at_restart(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "cluster", nodes=3) as cluster, cluster.client(timeout=10.0) as kv:
        leader = cluster.wait_for_leader(timeout=30)
        follower = next(n for n in cluster.names if n != leader)
        kv.set("k", "v")
        wait_until(lambda: _stale_get(cluster, follower, "k") == "v", f"{follower} to apply the write")
        cluster.kill(follower, signal.SIGTERM)
        shutil.rmtree(cluster.data_dir(follower) / "wal")
        cluster.start_node(follower)
        code = wait_until(lambda: _exit_code(cluster, follower), f"{follower} to refuse to start", timeout=20)
        assert code == EXIT_DATA
        tail = cluster.log_tail(follower)
        assert "no wal/ directory" in tail and f"{REPAIR} {follower}" in tail
        assert kv.get("k") == "v"


def test_a_new_server_waits_for_a_majority_of_the_others_new_and_serves_nothing_meanwhile(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", nodes=5)
    try:
        first, second, third, fourth, _ = cluster.names
        cluster.start_node(first)
        wait_until(lambda: "not founding the cluster yet" in cluster.log_tail(first), f"{first} to wait")
        member = next(m for m in parse_hostfile(cluster.hostfile) if m.name == first)
        with KVClient([member], timeout=1.0) as alone:
            with pytest.raises(KVError, match="checking, before it founds the cluster"):
                alone.get("k", consistency="local")
        assert not (cluster.data_dir(first) / "paxoskv-meta.json").exists()
        for name in (second, third):
            cluster.start_node(name)
        # Two others with no data are not yet a majority of five for any of them.
        wait_until(lambda: "not founding the cluster yet" in cluster.log_tail(third), f"{third} to wait")
        assert not (cluster.data_dir(first) / "paxoskv-meta.json").exists()
        cluster.start_node(fourth)  # three others with no data for each: a new cluster, the fifth may come later
        cluster.wait_for_leader(timeout=30)
        with cluster.client(timeout=10.0) as kv:
            kv.set("k", "v")
            assert kv.get("k") == "v"
    finally:
        cluster.stop()
