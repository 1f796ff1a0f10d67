"""The Docker deployment end to end: images, scripts, failures.

The images are built by ``./remove_and_build.sh`` (cached after the first
time; on a fresh machine that means building the debootstrap base image and
installing the dependencies, about ten minutes).  The cluster is started by
``./run_all_servers.sh`` under names of its own -- servers pxt0..pxt4 on the
network paxos_test_net with volumes paxos_data_pxt0.. -- so a real
deployment (container0.., paxos_network) is never touched.  The last tests,
which change the members of a running cluster, each start and remove a
cluster of their own (pxs0.. on paxos_test_scale_net; the scripts' output
and the servers' logs in .../docker0/TEST_NAME/).  Clients are
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
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.harness import PROJECT
from tests.harness.polling import wait_until

SERVER_IMAGE = "paxos"
CLIENT_IMAGE = "paxos_client"
SERVERS = [f"pxt{i}" for i in range(5)]
NETWORK = "paxos_test_net"
# The certificates run_all_servers.sh makes (TLS is on by default); servers
# mount the volume at /tls, client containers at /app/tls.
TLS_VOLUME = "paxos_test_tls"
# The cluster that grows and shrinks (test_hostfile_grows_and_shrinks_the_running_cluster):
# pxs0..pxs4 found it, pxs5 joins later.  Its own network and certificates,
# so the module's cluster is left alone.
SCALE_SERVERS = [f"pxs{i}" for i in range(6)]
SCALE_NETWORK = "paxos_test_scale_net"
SCALE_TLS_VOLUME = "paxos_test_scale_tls"
SCALE_SYNC_CONTAINER = f"{SCALE_NETWORK}_members_sync"  # run_all_servers.sh's members sync
SCALE_VOLUMES = [*(f"paxos_data_{name}" for name in SCALE_SERVERS), SCALE_TLS_VOLUME]
VOLUMES = [*(f"paxos_data_{name}" for name in SERVERS), TLS_VOLUME]
# Every one-shot client container carries this label, so cleanup finds any
# that outlived its `docker run` (e.g. after a timeout).
CLIENT_LABEL = "paxoskv.test=docker-client"
SERVER_PORT = 50051

BUILD_SECONDS = 45 * 60  # a fresh machine: base image ~2 min, dependencies ~8 min, slow mirrors more
DOCKER_SECONDS = 120  # any single docker CLI call other than the build
CLIENT_TIMEOUT = 10.0  # the client's own --timeout for a request to a healthy cluster
FAILOVER_TIMEOUT = 30.0  # the same while an election may be under way
SYNC_SECONDS = 300.0  # run_all_servers.sh --sync-timeout: members sync, learners catching up included
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
                [str(PROJECT / script)], cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script} did not finish in {timeout:g} s; last lines of {log}:\n{tail(log)}")
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}; last lines of {log}:\n{tail(log)}")


def remove_objects(containers: list[str], network: str, volumes: list[str]) -> list[str]:
    """Remove these containers, the network and the volumes; what could not be removed."""
    existing = [c for c in containers if docker("container", "inspect", c, check=False).returncode == 0]
    if existing:
        docker("rm", "--force", "--volumes", *existing, check=False)
    if docker("network", "inspect", network, check=False).returncode == 0:
        docker("network", "rm", network, check=False)
    present = [v for v in volumes if docker("volume", "inspect", v, check=False).returncode == 0]
    if present:
        docker("volume", "rm", "--force", *present, check=False)
    left = [c for c in containers if docker("container", "inspect", c, check=False).returncode == 0]
    if docker("network", "inspect", network, check=False).returncode == 0:
        left.append(f"network {network}")
    left += [f"volume {v}" for v in volumes if docker("volume", "inspect", v, check=False).returncode == 0]
    return left


def remove_scale_objects() -> list[str]:
    """Remove the growing and shrinking cluster; what could not be removed."""
    return remove_objects([*SCALE_SERVERS, SCALE_SYNC_CONTAINER], SCALE_NETWORK, SCALE_VOLUMES)


def remove_test_objects() -> list[str]:
    """Remove every container, network and volume these tests create; what could not be removed."""
    clients = docker("ps", "--all", "--quiet", "--filter", f"label={CLIENT_LABEL}", check=False).stdout.split()
    return remove_objects([*SERVERS, *clients], NETWORK, VOLUMES) + remove_scale_objects()


def save_server_logs(directory: Path, servers: list[str] = SERVERS) -> None:
    """Each server's output, kept in the test's temp directory for a post-mortem."""
    directory.mkdir(exist_ok=True)
    for server in servers:
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
    hostfile.write_text("# paxoskv Docker tests (tests/docker/test_docker.py)\n" + "".join(f"{s}\n" for s in SERVERS))
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
    def __init__(
        self,
        space: Workspace,
        network: str = NETWORK,
        hostfile: Path | None = None,
        tls_volume: str = TLS_VOLUME,
    ) -> None:
        self.space = space
        self.network = network
        self.hostfile = space.hostfile if hostfile is None else hostfile
        self.tls_volume = tls_volume

    def client(
        self,
        *args: str,
        timeout: float = CLIENT_TIMEOUT,
        via: str | None = None,
        tls: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one client command in a one-shot client container.

        Normally the client sees the whole cluster on the test network; with
        ``via=NAME`` it runs in server NAME's network namespace and knows only
        that server (at 127.0.0.1), so it works even when NAME is cut off.
        With ``tls=False`` the container gets no certificates.  With
        ``stdin`` and no command, the client runs those lines as a script.
        """
        if via is None:
            network, hostfile = self.network, self.hostfile
        else:
            network, hostfile = f"container:{via}", self.space.direct_hostfile(via)
        name = f"pxt-client-{uuid.uuid4().hex[:10]}"
        command = ["docker", "run", "--rm", "--name", name, "--label", CLIENT_LABEL, "--network", network]
        if stdin is not None:
            command.append("--interactive")
        command += ["--volume", f"{hostfile}:/app/hostfile.txt:ro"]
        if tls:
            command += ["--volume", f"{self.tls_volume}:/app/tls:ro"]
        command += [CLIENT_IMAGE, "--timeout", f"{timeout:g}", *args]
        try:
            return subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=timeout + DOCKER_SECONDS
            )
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


# ------------------------------------------- growing and shrinking a running cluster
# Last in the module, with a cluster of its own: the module's cluster and the
# tests above are left as they were.


def write_hostfile(path: Path, servers: list[str]) -> None:
    """Replace ``path`` whole (a new file renamed over it), so no reader ever sees it half written."""
    new = path.with_name(path.name + ".new")
    new.write_text("# paxoskv Docker tests: a cluster that grows and shrinks\n" + "".join(f"{s}\n" for s in servers))
    new.chmod(0o644)  # read by the servers' non-root user
    new.replace(path)


def scale_env(cluster: Cluster, sync_seconds: float = SYNC_SECONDS) -> dict[str, str]:
    env = {
        **os.environ,
        "HOSTFILE": str(cluster.hostfile),
        "SERVER_IMAGE": SERVER_IMAGE,
        "CLIENT_IMAGE": CLIENT_IMAGE,
        "NETWORK": cluster.network,
        "TLS_VOLUME": cluster.tls_volume,
        "SYNC_TIMEOUT": f"{sync_seconds:g}",
    }
    env.pop("PAXOSKV_INSECURE", None)
    return env


class Writer(threading.Thread):
    """Writes key after key through one-shot client containers, reading each back, until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="paxoskv-writer", daemon=True)
        self.cluster = cluster
        self.acknowledged: dict[str, str] = {}
        self.failures: list[str] = []
        self.done = 0  # writes acknowledged and read back
        self.progress = threading.Condition()
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            key, value = f"scale{i:05d}", f"value {i}"
            i += 1
            try:
                wrote = self.cluster.client("set", key, value, timeout=FAILOVER_TIMEOUT)
                if wrote.returncode != 0:
                    self.failures.append(f"set {key}: exit {wrote.returncode}, stderr {wrote.stderr!r}")
                    continue
                self.acknowledged[key] = value
                read = self.cluster.client("get", key, timeout=FAILOVER_TIMEOUT)
                if (read.returncode, read.stdout) != (0, f"{value}\n"):
                    self.failures.append(f"get {key}: exit {read.returncode}, {read.stdout!r}, {read.stderr!r}")
                    continue
            except Exception as exc:  # a client container that hung: note it, go on
                self.failures.append(f"{key}: {exc!r}")
                continue
            with self.progress:
                self.done += 1
                self.progress.notify_all()

    def wait_for_more(self, than: int) -> int:
        """Block until more than ``than`` writes are done (or the writer stopped); the count now."""
        with self.progress:
            self.progress.wait_for(lambda: self.done > than or not self.is_alive(), timeout=CLUSTER_SECONDS)
            assert self.done > than, f"the writer made no write in {CLUSTER_SECONDS:g} s: {self.failures[-3:]}"
            return self.done


def members_now(cluster: Cluster) -> dict[str, bool] | None:
    """``members --json`` as {name: voter} from the leader's view, or None when there is no leader in it."""
    result = cluster.client("members", "--json")
    if result.returncode != 0:
        return None
    try:
        members = json.loads(result.stdout)["members"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"members --json gave no JSON ({exc}): {result.stdout!r} {result.stderr!r}") from None
    if not any(m["leader"] for m in members):
        return None
    return {m["name"]: m["voter"] for m in members}


def wait_for_voters(cluster: Cluster, names: list[str]) -> None:
    wanted = dict.fromkeys(names, True)
    wait_until(
        lambda: members_now(cluster) == wanted,
        f"members --json to list exactly {', '.join(names)}, all voters",
        CLUSTER_SECONDS,
        DOCKER_POLL_SECONDS,
    )


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
