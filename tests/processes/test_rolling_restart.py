"""A rolling restart onto a reordered hostfile, caught halfway.

Servers read the hostfile when they start.  Here the hostfile's lines are
reversed while five servers run, and the servers are restarted one by one:
halfway through, some run with the old order and some with the new.  A
server's identity is its member id from its data dir, not its line, so the
mixed cluster elects leaders, keeps serving and loses nothing.
"""

from __future__ import annotations

import signal
from pathlib import Path

from client import KVClient
from paxos.common.hostfile import parse_hostfile
from tests.harness.polling import wait_until
from tools.localcluster import LocalCluster


def _leader(kv: KVClient) -> str | None:
    leaders = [str(n["name"]) for n in kv.status() if n["role"] == "leader"]
    return leaders[0] if leaders else None


def _reverse_lines(hostfile: Path) -> None:
    lines = hostfile.read_text().splitlines()
    comments = [line for line in lines if line.startswith("#") or not line.strip()]
    servers = [line for line in lines if line not in comments]
    hostfile.write_text("\n".join([*comments, *reversed(servers)]) + "\n")


def _replicas_agree(cluster: LocalCluster, expected: dict[str, str]) -> bool:
    members = parse_hostfile(cluster.hostfile)
    for member in members:
        with KVClient([member], timeout=2.0) as one:
            if any(one.get(k, consistency="local") != v for k, v in expected.items()):
                return False
    return True


def test_mixed_order_rolling_restart_elects_a_leader_and_loses_nothing(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "cluster", nodes=5) as cluster, cluster.client(timeout=30.0) as kv:
        cluster.wait_for_leader(timeout=60)
        names = cluster.names
        written = {f"before-{i}": str(i) for i in range(10)}
        for key, value in written.items():
            kv.set(key, value)

        _reverse_lines(cluster.hostfile)
        assert [m.name for m in parse_hostfile(cluster.hostfile)] == list(reversed(names))
        for name in names[:2]:  # these two now run with the new order
            cluster.restart(name)
        cluster.kill(names[4], signal.SIGTERM)  # two on each order are left running
        cluster.wait_for_nodes(timeout=60, names=names[:4])
        kv.set("halfway", "mixed")
        written["halfway"] = "mixed"

        # An election among servers on both orders: kill the leader, whoever it is.
        leader = wait_until(lambda: _leader(kv), "a leader in the mixed cluster", timeout=60)
        cluster.kill(leader, signal.SIGKILL)
        wait_until(lambda: _leader(kv) not in (None, leader), "a new leader among mixed orders", timeout=60)
        kv.set("elected", "mixed")
        written["elected"] = "mixed"
        for key, value in written.items():
            assert kv.get(key) == value

        for name in (leader, names[4]):
            cluster.start_node(name)
        for name in names[2:4]:
            if name != leader:
                cluster.restart(name)  # the rest move to the new order
        cluster.wait_for_nodes(timeout=60)
        kv.set("after", "new order")
        written["after"] = "new order"
        wait_until(lambda: _replicas_agree(cluster, written), "every replica to hold every write", timeout=60)
        cluster.check_alive()
