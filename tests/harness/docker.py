"""The Docker tests' toolkit: the engine probe, docker calls, the scripts, a test cluster and its clients.

tests/docker/conftest.py builds the images and gives each module its workspace; the modules
(tests/docker/test_cluster.py, tests/docker/test_scaling.py) run side by side on two workers,
each with clusters under names of its own.  See tests/docker/__init__.py.
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
from collections.abc import Callable
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
# Every one-shot client container carries its cluster's label (see
# client_label), so cleanup finds any that outlived its `docker run` (e.g.
# after a timeout) without touching the other module's.
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
LOCK_SECONDS = 30 * 60  # how long to wait for another run of a module, or the build, to finish
# One lock a module, since runs of a module on one machine share its names;
# one for the build, so that the modules build the images once between them.
LOCKS = Path(tempfile.gettempdir())
BUILD_LOCK = LOCKS / "paxoskv-docker-build.lock"


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
SKIP_REASON = f"Docker tests skipped: {ENGINE_PROBLEM}" if ENGINE == "absent" else ""
if SKIP_REASON:
    # Shown in pytest's warnings summary, so the skip is visible without -rs.
    warnings.warn(SKIP_REASON, stacklevel=1)


def module_marks() -> list[pytest.MarkDecorator]:
    """Each Docker module's ``pytestmark``: its timeout, and the skip when there is no engine."""
    # The first test of a module also waits for its turn and the image build.
    marks = [pytest.mark.docker, pytest.mark.timeout(2 * LOCK_SECONDS + BUILD_SECONDS + 15 * 60)]
    if SKIP_REASON:
        marks.append(pytest.mark.skip(reason=SKIP_REASON))
    return marks


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


def client_label(network: str) -> str:
    """The label of the one-shot client containers of the cluster on ``network``."""
    return f"{CLIENT_LABEL}-{network}"


def clients_of(network: str) -> list[str]:
    return docker("ps", "--all", "--quiet", "--filter", f"label={client_label(network)}", check=False).stdout.split()


def remove_scale_objects() -> list[str]:
    """Remove the growing and shrinking cluster and its clients; what could not be removed."""
    servers = [*SCALE_SERVERS, SCALE_SYNC_CONTAINER, *clients_of(SCALE_NETWORK)]
    return remove_objects(servers, SCALE_NETWORK, SCALE_VOLUMES)


def remove_test_objects() -> list[str]:
    """Remove the module cluster (pxt0..), its clients, network and volumes; what could not be removed."""
    return remove_objects([*SERVERS, *clients_of(NETWORK)], NETWORK, VOLUMES)


def save_server_logs(directory: Path, servers: list[str] = SERVERS) -> None:
    """Each server's output, kept in the test's temp directory for a post-mortem."""
    directory.mkdir(exist_ok=True)
    for server in servers:
        logs = docker("logs", "--timestamps", server, check=False)
        if logs.returncode == 0:
            (directory / f"{server}.log").write_text(logs.stdout + logs.stderr)


def take_turn(path: Path) -> IO[bytes]:
    """An exclusive lock on ``path``, held while the file stays open."""
    lock = path.open("ab")
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                pytest.fail(f"another run of the Docker tests held {path} for {LOCK_SECONDS} s")
            time.sleep(1)


# --------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Site:
    """What one Docker test module owns: its servers' names, and how to remove all it may leave behind."""

    name: str
    servers: list[str]
    remove: Callable[[], list[str]]  # what could not be removed

    @property
    def lock(self) -> Path:
        return LOCKS / f"paxoskv-docker-tests-{self.name}.lock"


@dataclass
class Workspace:
    dir: Path
    hostfile: Path  # the whole test cluster

    def direct_hostfile(self, server: str) -> Path:
        """A hostfile listing only ``server``, as seen from inside its own network namespace."""
        return self.dir / f"only-{server}.txt"


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
        label = client_label(self.network)
        command = ["docker", "run", "--rm", "--name", name, "--label", label, "--network", network]
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


def expect(result: subprocess.CompletedProcess[str], code: int, stdout: str | None = None) -> None:
    described = f"exit {result.returncode}, stdout {result.stdout!r}, stderr {result.stderr!r}"
    assert result.returncode == code, f"expected exit {code}: {described}"
    if stdout is not None:
        assert result.stdout == stdout, described


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


# The module cluster (tests/docker/test_cluster.py) and the clusters that grow
# and shrink (tests/docker/test_scaling.py).
CLUSTER_SITE = Site("pxt", SERVERS, remove_test_objects)
SCALE_SITE = Site("pxs", SCALE_SERVERS, remove_scale_objects)
