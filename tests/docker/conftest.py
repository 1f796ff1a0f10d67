"""The Docker tier's fixtures: each module's workspace, the images (built once for all), the module cluster.

Each module names what it owns in ``SITE`` (tests/harness/docker.py): the
module cluster's pxt0..pxt4, or the growing cluster's pxs0..pxs5.  The two
modules run side by side on two workers; a run of a module waits for any
other run of the same module on this machine (they share the names), and
the first module to need the images builds them while the other waits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.docker import (
    BUILD_LOCK,
    BUILD_SECONDS,
    CLIENT_IMAGE,
    DOCKER_SECONDS,
    ENGINE,
    ENGINE_PROBLEM,
    NETWORK,
    SERVER_IMAGE,
    SERVER_PORT,
    SERVERS,
    TLS_VOLUME,
    Cluster,
    Site,
    Workspace,
    run_script,
    save_server_logs,
    take_turn,
)


@pytest.fixture(scope="module")
def workspace(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    if ENGINE != "ok":
        pytest.fail(ENGINE_PROBLEM)
    site: Site = request.module.SITE
    lock = take_turn(site.lock)
    request.addfinalizer(lock.close)  # closing releases the lock; registered first, so it runs last
    root = tmp_path_factory.mktemp(f"docker-{site.name}")
    hostfile = root / "hostfile.txt"
    hostfile.write_text(f"# paxoskv Docker tests ({request.path.name})\n" + "".join(f"{s}\n" for s in site.servers))
    hostfile.chmod(0o644)  # read by the servers' non-root user
    space = Workspace(root, hostfile)
    for server in SERVERS:
        path = space.direct_hostfile(server)
        path.write_text(f"{server} 127.0.0.1:{SERVER_PORT}\n")
        path.chmod(0o644)

    def cleanup() -> None:
        save_server_logs(root / "logs", site.servers)
        left = site.remove()
        if left:
            pytest.fail(f"could not remove {', '.join(left)}; remove them by hand")

    request.addfinalizer(cleanup)
    left = site.remove()  # leftovers of an interrupted run
    assert not left, f"could not remove leftovers of an earlier run: {', '.join(left)}"
    return space


@pytest.fixture(scope="module")
def images(workspace: Workspace) -> None:
    """``./remove_and_build.sh``: removes the module's containers, builds both images.

    The module that comes second finds every layer in Docker's cache.
    """
    env = {
        **os.environ,
        "HOSTFILE": str(workspace.hostfile),
        "SERVER_IMAGE": SERVER_IMAGE,
        "CLIENT_IMAGE": CLIENT_IMAGE,
    }
    with take_turn(BUILD_LOCK):
        run_script("remove_and_build.sh", env, workspace.dir / "build.log", BUILD_SECONDS)


@pytest.fixture(scope="module")
def started(workspace: Workspace, images: None) -> Cluster:
    """``./run_all_servers.sh`` with the test hostfile and network."""
    env = {
        **os.environ,
        "HOSTFILE": str(workspace.hostfile),
        "SERVER_IMAGE": SERVER_IMAGE,
        "NETWORK": NETWORK,
        "TLS_VOLUME": TLS_VOLUME,
    }
    env.pop("PAXOSKV_INSECURE", None)
    run_script("run_all_servers.sh", env, workspace.dir / "run_all_servers.log", DOCKER_SECONDS * len(SERVERS))
    return Cluster(workspace)


@pytest.fixture
def cluster(started: Cluster) -> Iterator[Cluster]:
    """All five servers up, connected, with one leader and nothing left to apply."""
    started.restore()
    started.wait_caught_up(SERVERS)
    yield started
