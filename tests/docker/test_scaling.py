"""Clusters that grow, shrink and replace a server (pxs0..pxs5), each test with its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.docker import (
    CLUSTER_SECONDS,
    DOCKER_SECONDS,
    FAILOVER_TIMEOUT,
    SCALE_NETWORK,
    SCALE_SERVERS,
    SCALE_SITE,
    SCALE_TLS_VOLUME,
    SYNC_SECONDS,
    Cluster,
    Workspace,
    Writer,
    docker,
    expect,
    module_marks,
    remove_scale_objects,
    run_script,
    save_server_logs,
    scale_env,
    tail,
    wait_for_voters,
    write_hostfile,
)

SITE = SCALE_SITE
pytestmark = module_marks()


@pytest.fixture
def scaling(request: pytest.FixtureRequest, workspace: Workspace, images: None) -> Iterator[Cluster]:
    """A cluster of pxs0..pxs4 founded by ``./run_all_servers.sh``; removed afterwards.

    Its hostfile, the scripts' output and the servers' logs are kept in a
    directory named after the test (``cluster.hostfile.parent``).
    """
    left = remove_scale_objects()
    assert not left, f"could not remove leftovers of an earlier run: {', '.join(left)}"
    directory = workspace.dir / request.node.name
    directory.mkdir()
    hostfile = directory / "hostfile.txt"
    write_hostfile(hostfile, SCALE_SERVERS[:5])
    cluster = Cluster(workspace, network=SCALE_NETWORK, hostfile=hostfile, tls_volume=SCALE_TLS_VOLUME)
    try:
        run_script("run_all_servers.sh", scale_env(cluster), directory / "found.log", DOCKER_SECONDS * 5)
        yield cluster
    finally:
        save_server_logs(directory / "logs", SCALE_SERVERS)
        left = remove_scale_objects()
        assert not left, f"could not remove {', '.join(left)}; remove them by hand"


def test_hostfile_grows_and_shrinks_the_running_cluster(scaling: Cluster) -> None:
    cluster, logs = scaling, scaling.hostfile.parent
    founders = SCALE_SERVERS[:5]
    script_seconds = SYNC_SECONDS + DOCKER_SECONDS * len(SCALE_SERVERS)
    cluster.wait_caught_up(founders)
    # The founding run made no membership change.
    assert "members sync" not in (logs / "found.log").read_text()

    writer = Writer(cluster)
    writer.start()
    try:
        done = writer.wait_for_more(0)

        # Grow: a sixth line; the running five are left alone, pxs5 joins.
        started_at = {s: docker("inspect", "--format", "{{.State.StartedAt}}", s).stdout for s in founders}
        write_hostfile(cluster.hostfile, SCALE_SERVERS)
        run_script("run_all_servers.sh", scale_env(cluster), logs / "grow.log", script_seconds)
        grow_log = (logs / "grow.log").read_text()
        for step in ("adding pxs5", "promoting learner pxs5", "pxs5 is a voter"):
            assert step in grow_log, f"members sync did not print {step!r}:\n{tail(logs / 'grow.log')}"
        assert "--join" in docker("inspect", "--format", "{{json .Args}}", "pxs5").stdout
        assert {s: docker("inspect", "--format", "{{.State.StartedAt}}", s).stdout for s in founders} == started_at
        wait_for_voters(cluster, SCALE_SERVERS)
        done = writer.wait_for_more(done)

        # Shrink: two lines gone, the leader's among them (it is removed last and hands over).
        leader = cluster.wait_caught_up(SCALE_SERVERS)
        removed = [leader, next(s for s in founders if s != leader)]
        kept = [s for s in SCALE_SERVERS if s not in removed]
        write_hostfile(cluster.hostfile, kept)
        run_script("run_all_servers.sh", scale_env(cluster), logs / "shrink.log", script_seconds)
        shrink_log = (logs / "shrink.log").read_text()
        for server in removed:
            assert f"removing {server}" in shrink_log, f"no removal of {server}:\n{tail(logs / 'shrink.log')}"
        wait_for_voters(cluster, kept)
        for server in removed:
            assert not cluster.is_running(server), f"{server} was removed but still runs"
            assert docker("volume", "inspect", f"paxos_data_{server}", check=False).returncode == 0
        assert all(cluster.is_running(s) for s in kept)
        cluster.wait_caught_up(kept)
        writer.wait_for_more(done)
    finally:
        writer.stopping.set()
        writer.join(timeout=FAILOVER_TIMEOUT * 2 + DOCKER_SECONDS * 2)
    assert not writer.is_alive(), "the writer did not stop"
    assert not writer.failures, f"{len(writer.failures)} client commands failed: {writer.failures[:5]}"

    # Every acknowledged write is there, read by one client through the four.
    keys = sorted(writer.acknowledged)
    read = cluster.client(stdin="".join(f"get {key}\n" for key in keys), timeout=FAILOVER_TIMEOUT)
    expect(read, 0, stdout="".join(f"{writer.acknowledged[key]}\n" for key in keys))


def test_a_replaced_server_rejoins_under_its_name(scaling: Cluster) -> None:
    cluster, logs = scaling, scaling.hostfile.parent
    founders = SCALE_SERVERS[:5]
    dead = founders[-1]
    cluster.wait_caught_up(founders)
    expect(cluster.client("set", "before", "the replacement"), 0)

    # The documented way: drop its line and run, wipe it, add the line back and run.
    write_hostfile(cluster.hostfile, founders[:-1])
    run_script("run_all_servers.sh", scale_env(cluster), logs / "remove.log", SYNC_SECONDS + DOCKER_SECONDS)
    wait_for_voters(cluster, founders[:-1])
    docker("rm", "--force", dead)
    docker("volume", "rm", f"paxos_data_{dead}")
    write_hostfile(cluster.hostfile, founders)
    # A learner with a handful of slots to copy: CLUSTER_SECONDS is ample, and keeps the expected failure short.
    run_script("run_all_servers.sh", scale_env(cluster, CLUSTER_SECONDS), logs / "add.log", CLUSTER_SECONDS * 2)
    assert "--join" in docker("inspect", "--format", "{{json .Args}}", dead).stdout
    wait_for_voters(cluster, founders)
    cluster.wait_caught_up(founders)
    expect(cluster.client("get", "before"), 0, stdout="the replacement\n")
