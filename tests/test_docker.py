"""The Docker deployment end to end: images, scripts, failures.

The images are built by ``./remove_and_build.sh`` (cached after the first
time; on a fresh machine that means building the debootstrap base image and
installing the dependencies, about ten minutes).  The cluster is started by
``./run_all_servers.sh`` under names of its own -- servers pxt0..pxt4 on the
network paxos_test_net with volumes paxos_data_pxt0.. -- so a real
deployment (container0.., paxos_network) is never touched.  Clients are
one-shot ``paxos_client`` containers.  Everything the tests create is removed
afterwards, also when they fail (the servers' logs are kept first, in the
pytest temp directory: .../docker0/logs/); leftovers of an interrupted run
are removed before starting.  The build's output is in .../docker0/build.log.

A server cut off the network is reached through its own network namespace
(``--network container:NAME`` and a hostfile listing only 127.0.0.1:50051), so
a query there tests that server and nothing else.

These tests run whenever ``docker info`` works; they are skipped, with the
reason shown, only when there is no Docker engine.  Runs of this module on
one machine take turns (a lock file in the temp directory), since they share
the names.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.polling import wait_until

REPO = Path(__file__).resolve().parent.parent
SERVER_IMAGE = "paxos"
CLIENT_IMAGE = "paxos_client"
SERVERS = [f"pxt{i}" for i in range(5)]
NETWORK = "paxos_test_net"
# The certificates run_all_servers.sh makes (TLS is on by default); servers
# mount the volume at /tls, client containers at /app/tls.
TLS_VOLUME = "paxos_test_tls"
VOLUMES = [*(f"paxos_data_{name}" for name in SERVERS), TLS_VOLUME]
# Every one-shot client container carries this label, so cleanup finds any
# that outlived its `docker run` (e.g. after a timeout).
CLIENT_LABEL = "paxoskv.test=docker-client"
SERVER_PORT = 50051

BUILD_SECONDS = 45 * 60  # a fresh machine: base image ~2 min, dependencies ~8 min, slow mirrors more
DOCKER_SECONDS = 120  # any single docker CLI call other than the build
CLIENT_TIMEOUT = 10.0  # the client's own --timeout for a request to a healthy cluster
FAILOVER_TIMEOUT = 30.0  # the same while an election may be under way
CUT_OFF_TIMEOUT = 3.0  # a request to a server cut off the network: it must give up, not hang
CLUSTER_SECONDS = 120.0  # deadline for the cluster to reach a state (leader, caught up, healthy)
DOCKER_POLL_SECONDS = 0.5  # each probe runs docker commands; do not hammer the engine
LOCK_SECONDS = 30 * 60  # how long to wait for another run of this module to finish
LOCK_FILE = Path(tempfile.gettempdir()) / "paxoskv-docker-tests.lock"


# ------------------------------------------------------- is there a Docker engine?


def _probe_engine() -> tuple[str, str]:
    """("ok" | "absent" | "broken", explanation)."""
    if shutil.which("docker") is None:
        return "absent", "the docker command is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "broken", "`docker info` did not answer within 60 s"
    if info.returncode == 0:
        return "ok", ""
    message = " ".join(info.stderr.split()) or f"`docker info` exited {info.returncode}"
    no_engine = ("cannot connect to the docker daemon", "is the docker daemon running", "error during connect")
    if any(phrase in message.lower() for phrase in no_engine):
        return "absent", f"no Docker engine: {message}"
    # An engine is there but unusable (e.g. permission denied): fail, do not hide it.
    return "broken", f"`docker info` failed: {message}"


ENGINE, ENGINE_PROBLEM = _probe_engine()
pytestmark = [
    pytest.mark.docker,
    # The first test to run also waits for its turn and the image build.
    pytest.mark.timeout(LOCK_SECONDS + BUILD_SECONDS + 15 * 60),
]
if ENGINE == "absent":
    SKIP_REASON = f"Docker tests skipped: {ENGINE_PROBLEM}"
    # Shown in pytest's warnings summary, so the skip is visible without -rs.
    warnings.warn(SKIP_REASON, stacklevel=1)
    pytestmark.append(pytest.mark.skip(reason=SKIP_REASON))


# ---------------------------------------------------------------------- helpers


def docker(*args: str, check: bool = True, timeout: float = DOCKER_SECONDS) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def run_script(script: str, env: dict[str, str], log: Path, timeout: float) -> None:
    """Run one of the repository's scripts, output to ``log``; fail with the log's tail."""
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                [str(REPO / script)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script} did not finish in {timeout:g} s; last lines of {log}:\n{tail(log)}")
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}; last lines of {log}:\n{tail(log)}")


def remove_test_objects() -> list[str]:
    """Remove every container, network and volume these tests create; what could not be removed."""
    clients = docker("ps", "--all", "--quiet", "--filter", f"label={CLIENT_LABEL}", check=False).stdout.split()
    containers = [*SERVERS, *clients]
    existing = [c for c in containers if docker("container", "inspect", c, check=False).returncode == 0]
    if existing:
        docker("rm", "--force", "--volumes", *existing, check=False)
    if docker("network", "inspect", NETWORK, check=False).returncode == 0:
        docker("network", "rm", NETWORK, check=False)
    volumes = [v for v in VOLUMES if docker("volume", "inspect", v, check=False).returncode == 0]
    if volumes:
        docker("volume", "rm", "--force", *volumes, check=False)
    left = [c for c in containers if docker("container", "inspect", c, check=False).returncode == 0]
    if docker("network", "inspect", NETWORK, check=False).returncode == 0:
        left.append(f"network {NETWORK}")
    left += [f"volume {v}" for v in VOLUMES if docker("volume", "inspect", v, check=False).returncode == 0]
    return left


def save_server_logs(directory: Path) -> None:
    """Each server's output, kept in the test's temp directory for a post-mortem."""
    directory.mkdir(exist_ok=True)
    for server in SERVERS:
        logs = docker("logs", "--timestamps", server, check=False)
        if logs.returncode == 0:
            (directory / f"{server}.log").write_text(logs.stdout + logs.stderr)


def take_turn() -> IO[bytes]:
    """An exclusive lock on LOCK_FILE, held while the file stays open."""
    lock = LOCK_FILE.open("ab")
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                pytest.fail(f"another run of the Docker tests held {LOCK_FILE} for {LOCK_SECONDS} s")
            time.sleep(1)


# --------------------------------------------------------------------- fixtures


@dataclass
class Workspace:
    dir: Path
    hostfile: Path  # the whole test cluster

    def direct_hostfile(self, server: str) -> Path:
        """A hostfile listing only ``server``, as seen from inside its own network namespace."""
        return self.dir / f"only-{server}.txt"


@pytest.fixture(scope="module")
def workspace(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    if ENGINE != "ok":
        pytest.fail(ENGINE_PROBLEM)
    lock = take_turn()
    request.addfinalizer(lock.close)  # closing releases the lock; registered first, so it runs last
    root = tmp_path_factory.mktemp("docker")
    hostfile = root / "hostfile.txt"
    hostfile.write_text("# paxoskv Docker tests (tests/test_docker.py)\n" + "".join(f"{s}\n" for s in SERVERS))
    hostfile.chmod(0o644)  # read by the servers' non-root user
    space = Workspace(root, hostfile)
    for server in SERVERS:
        path = space.direct_hostfile(server)
        path.write_text(f"{server} 127.0.0.1:{SERVER_PORT}\n")
        path.chmod(0o644)

    def cleanup() -> None:
        save_server_logs(root / "logs")
        left = remove_test_objects()
        if left:
            pytest.fail(f"could not remove {', '.join(left)}; remove them by hand")

    request.addfinalizer(cleanup)
    left = remove_test_objects()  # leftovers of an interrupted run
    assert not left, f"could not remove leftovers of an earlier run: {', '.join(left)}"
    return space


@pytest.fixture(scope="module")
def images(workspace: Workspace) -> None:
    """``./remove_and_build.sh``: removes the test cluster's containers, builds both images."""
    env = {
        **os.environ,
        "HOSTFILE": str(workspace.hostfile),
        "SERVER_IMAGE": SERVER_IMAGE,
        "CLIENT_IMAGE": CLIENT_IMAGE,
    }
    run_script("remove_and_build.sh", env, workspace.dir / "build.log", BUILD_SECONDS)


class Cluster:
    def __init__(self, space: Workspace) -> None:
        self.space = space

    def client(
        self, *args: str, timeout: float = CLIENT_TIMEOUT, via: str | None = None, tls: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one client command in a one-shot client container.

        Normally the client sees the whole cluster on the test network; with
        ``via=NAME`` it runs in server NAME's network namespace and knows only
        that server (at 127.0.0.1), so it works even when NAME is cut off.
        With ``tls=False`` the container gets no certificates.
        """
        if via is None:
            network, hostfile = NETWORK, self.space.hostfile
        else:
            network, hostfile = f"container:{via}", self.space.direct_hostfile(via)
        name = f"pxt-client-{uuid.uuid4().hex[:10]}"
        command = ["docker", "run", "--rm", "--name", name, "--label", CLIENT_LABEL, "--network", network]
        command += ["--volume", f"{hostfile}:/app/hostfile.txt:ro"]
        if tls:
            command += ["--volume", f"{TLS_VOLUME}:/app/tls:ro"]
        command += [CLIENT_IMAGE, "--timeout", f"{timeout:g}", *args]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout + DOCKER_SECONDS)
        except subprocess.TimeoutExpired:
            docker("rm", "--force", name, check=False)
            raise

    def status(self, via: str | None = None) -> dict[str, dict[str, Any]]:
        """``status --json`` by server name (exit 3 without a leader still prints it)."""
        result = self.client("status", "--json", timeout=5, via=via)
        try:
            return {node["name"]: node for node in json.loads(result.stdout)["nodes"]}
        except (ValueError, KeyError) as exc:
            raise AssertionError(f"status --json gave no JSON ({exc}): {result.stdout!r} {result.stderr!r}") from None

    def leader(self, status: dict[str, dict[str, Any]] | None = None) -> str | None:
        """The one reachable server that says it leads, or None."""
        status = self.status() if status is None else status
        leaders = [name for name, n in status.items() if n["reachable"] and n["role"] == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def caught_up(self, names: list[str]) -> str | None:
        """The leader's name once each of ``names`` has applied everything the leader committed."""
        status = self.status()
        leader = self.leader(status)
        if leader is None:
            return None
        target = status[leader]["commit_index"]
        if all(status[n]["reachable"] and status[n]["applied_index"] >= target for n in names):
            return leader
        return None

    def wait_caught_up(self, names: list[str], timeout: float = CLUSTER_SECONDS) -> str:
        return wait_until(
            lambda: self.caught_up(names), f"a leader, with {', '.join(names)} caught up", timeout, DOCKER_POLL_SECONDS
        )

    def is_running(self, server: str) -> bool:
        return docker("inspect", "--format", "{{.State.Running}}", server).stdout.strip() == "true"

    def is_connected(self, server: str) -> bool:
        networks = docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", server).stdout
        return NETWORK in json.loads(networks or "{}")

    def restore(self) -> None:
        """Every server running and on the network (undoes what a failed test left)."""
        for server in SERVERS:
            if not self.is_running(server):
                docker("start", server)
            if not self.is_connected(server):
                docker("network", "connect", NETWORK, server)


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


def expect(result: subprocess.CompletedProcess[str], code: int, stdout: str | None = None) -> None:
    described = f"exit {result.returncode}, stdout {result.stdout!r}, stderr {result.stderr!r}"
    assert result.returncode == code, f"expected exit {code}: {described}"
    if stdout is not None:
        assert result.stdout == stdout, described


# ------------------------------------------------------------------------ tests


def test_images_run_as_a_non_root_user(images: None) -> None:
    for image in (SERVER_IMAGE, CLIENT_IMAGE):
        user = docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        assert user not in ("", "root", "0", "0:0"), f"{image} runs as {user or 'root (no USER)'}"
        uid = docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        assert uid != "0", f"{image} runs as root"


def test_server_image_holds_only_what_the_server_needs(images: None) -> None:
    probe = (
        "import importlib.util as u; "
        "print(' '.join(m for m in ('numpy', 'scipy', 'pywt', 'PIL', 'imagehash', 'prompt_toolkit', 'tqdm') "
        "if u.find_spec(m)))"
    )
    server = docker("run", "--rm", "--entrypoint", "python", SERVER_IMAGE, "-c", probe).stdout.split()
    assert server == [], f"the server image has client-only packages: {server}"
    client = docker("run", "--rm", "--entrypoint", "python", CLIENT_IMAGE, "-c", probe).stdout.split()
    assert {"numpy", "imagehash", "PIL", "prompt_toolkit"} <= set(client)
    docker("run", "--rm", "--entrypoint", "python", CLIENT_IMAGE, "-c", "import client.images")


def test_healthcheck_reports_healthy(cluster: Cluster) -> None:
    def health() -> dict[str, str]:
        return {s: docker("inspect", "--format", "{{.State.Health.Status}}", s).stdout.strip() for s in SERVERS}

    wait_until(
        lambda: all(h == "healthy" for h in health().values()),
        "every server's HEALTHCHECK to pass",
        CLUSTER_SECONDS,
        DOCKER_POLL_SECONDS,
    )
    # And the running server process is not root either.
    assert docker("exec", SERVERS[0], "id", "-u").stdout.strip() != "0"


def test_the_cluster_serves_tls_only(cluster: Cluster) -> None:
    plaintext = cluster.client("get", "greeting", timeout=3, tls=False)
    assert plaintext.returncode == 3, plaintext
    assert "requires TLS" in plaintext.stderr and plaintext.stderr.count("\n") == 1, plaintext.stderr
    logs = docker("logs", SERVERS[0]).stderr + docker("logs", SERVERS[0]).stdout
    assert "TLS on" in logs and "without TLS" not in logs
    probe = ["python", "-m", "paxos.healthcheck", "--address", f"127.0.0.1:{SERVER_PORT}"]
    assert docker("exec", SERVERS[0], *probe, "--tls-dir", "/tls").returncode == 0
    assert docker("exec", SERVERS[0], *probe, check=False).returncode == 1


def test_set_get_delete_with_exit_codes(cluster: Cluster) -> None:
    expect(cluster.client("set", "greeting", "hello", "world"), 0, stdout="")
    expect(cluster.client("get", "greeting"), 0, stdout="hello world\n")
    expect(cluster.client("get", "no-such-key"), 1, stdout="")
    expect(cluster.client("delete", "greeting"), 0)
    expect(cluster.client("get", "greeting"), 1, stdout="")
    expect(cluster.client("delete", "greeting"), 1)
    expect(cluster.client("get"), 2)  # usage error: no key
    expect(cluster.client("--stale", "get", "no-such-key"), 1)


def test_killed_leader_fails_over_and_catches_up_after_restart(cluster: Cluster) -> None:
    before = {f"before{i}": f"value {i}" for i in range(3)}
    for key, value in before.items():
        expect(cluster.client("set", key, value), 0)
    old_leader = cluster.wait_caught_up(SERVERS)

    docker("kill", old_leader)
    expect(cluster.client("set", "during", "leader down", timeout=FAILOVER_TIMEOUT), 0)
    expect(cluster.client("get", "during"), 0, stdout="leader down\n")
    for key, value in before.items():
        expect(cluster.client("get", key), 0, stdout=f"{value}\n")
    survivors = [s for s in SERVERS if s != old_leader]
    assert cluster.wait_caught_up(survivors) != old_leader

    docker("restart", old_leader)
    cluster.wait_caught_up(SERVERS)
    # Its own copy (a stale read there) has what was written while it was down.
    expect(cluster.client("--stale", "get", "during", via=old_leader), 0, stdout="leader down\n")


def test_cut_off_minority_serves_no_stale_reads_and_catches_up(cluster: Cluster) -> None:
    expect(cluster.client("set", "color", "red"), 0)
    leader = cluster.wait_caught_up(SERVERS)
    # The leader and one follower: the old leader must notice it no longer leads.
    cut = [leader, next(s for s in SERVERS if s != leader)]
    majority = [s for s in SERVERS if s not in cut]

    for server in cut:
        docker("network", "disconnect", NETWORK, server)
    expect(cluster.client("set", "color", "blue", timeout=FAILOVER_TIMEOUT), 0)
    expect(cluster.client("set", "shape", "square"), 0)
    expect(cluster.client("get", "color"), 0, stdout="blue\n")
    assert cluster.wait_caught_up(majority) in majority

    for server in cut:
        # Its own copy is old: the partition is real ...
        expect(cluster.client("--stale", "get", "color", via=server), 0, stdout="red\n")
        # ... and it must not offer that copy as a linearizable read.
        read = cluster.client("get", "color", timeout=CUT_OFF_TIMEOUT, via=server)
        assert read.returncode == 3 or (read.returncode, read.stdout) == (0, "blue\n"), (
            f"{server}, cut off, answered a linearizable get with exit {read.returncode}, "
            f"stdout {read.stdout!r}, stderr {read.stderr!r}"
        )

    for server in cut:
        docker("network", "connect", NETWORK, server)
    cluster.wait_caught_up(SERVERS)
    for server in cut:
        expect(cluster.client("--stale", "get", "shape", via=server), 0, stdout="square\n")
    expect(cluster.client("get", "color"), 0, stdout="blue\n")
