"""The images and a five-server cluster (pxt0..pxt4) started by ./run_all_servers.sh."""

from __future__ import annotations

from tests.harness.docker import (
    CLIENT_IMAGE,
    CLUSTER_SECONDS,
    CLUSTER_SITE,
    CUT_OFF_TIMEOUT,
    DOCKER_POLL_SECONDS,
    FAILOVER_TIMEOUT,
    NETWORK,
    SERVER_IMAGE,
    SERVER_PORT,
    SERVERS,
    Cluster,
    docker,
    expect,
    module_marks,
)
from tests.harness.polling import wait_until

SITE = CLUSTER_SITE
pytestmark = module_marks()


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
