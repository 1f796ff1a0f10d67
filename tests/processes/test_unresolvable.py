"""Hostfile names that do not resolve (a typo, a stopped Docker container): nothing connected, nothing written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import KVClient
from tests.harness import PROJECT
from tests.harness.cli import run_cli, server_argv
from tests.harness.polling import wait_until
from tools.localcluster import free_ports

# RFC 2606 reserves .invalid: these names never resolve.
GHOSTS = ("ghost-a.invalid:50051", "ghost-b.invalid:50051")


def assert_unavailable(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 3, result.stderr
    assert "cluster unavailable" in result.stderr, result.stderr
    assert "outcome unknown" not in result.stderr and "may or may not" not in result.stderr, result.stderr


def test_set_with_only_an_unresolvable_name_is_unavailable(tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text(f"node1 {GHOSTS[0]}\n")
    assert_unavailable(run_cli(hostfile, "set", "k", "v", timeout=2))


@pytest.fixture
def lone_server(tmp_path: Path) -> Iterator[Path]:
    """One live server whose two peers' names do not resolve: it answers status, but can never found the cluster.

    With an empty data dir it waits for the others to answer before it
    founds, and they never can.
    """
    port = free_ports(1)[0]
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text(f"node1 127.0.0.1:{port}\nnode2 {GHOSTS[0]}\nnode3 {GHOSTS[1]}\n")
    log = (tmp_path / "node1.log").open("wb")
    server = subprocess.Popen(
        server_argv(hostfile, "node1", tmp_path / "node1", f"127.0.0.1:{port}"),
        cwd=PROJECT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with KVClient.from_hostfile(hostfile, timeout=1.0) as kv:
            node1 = wait_until(lambda: [n for n in kv.status() if n["reachable"]], "node1 answering", timeout=60)[0]
            assert node1["membership"] == "founding", node1
        yield hostfile
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_set_with_unresolvable_names_beside_a_live_server_is_unavailable(lone_server: Path) -> None:
    assert_unavailable(run_cli(lone_server, "set", "k", "v", timeout=2))
    # It holds nothing yet, so it serves no read either, not even a stale one.
    assert_unavailable(run_cli(lone_server, "--stale", "get", "k", timeout=2))
