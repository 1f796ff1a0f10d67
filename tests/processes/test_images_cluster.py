"""iset / iget against five real servers on loopback, over TLS (the certificates beside the hostfile).

The tests share one cluster and the photos stored in it first, each storing
any other photo of its own; the leader failover gets a cluster of its own.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import skimage.data
from PIL import Image

from benchmarks.image_hash_eval import EDITS
from client import ImageError, InvalidRequest, KVClient
from client.images import hash_hex, hash_image
from paxos.common.limits import MAX_METADATA_BYTES
from tests.harness.cli import run_cli
from tools.localcluster import LocalCluster

DATA = Path(skimage.data.data_dir)


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 5, "tls": True}


@pytest.fixture(scope="module")
def kv(shared_cluster: LocalCluster) -> Iterator[KVClient]:
    """A client of the module's shared cluster, three photos stored; each test stores any others it needs."""
    with shared_cluster.client(timeout=20) as client:
        client.iset(DATA / "astronaut.png", "astronaut: Eileen Collins, NASA portrait")
        client.iset(DATA / "coffee.png", "a cup of coffee")
        client.iset(DATA / "motorcycle_left.png", "motorcycle, left camera")
        yield client


def test_exact_round_trip(kv: KVClient) -> None:
    assert kv.iget(DATA / "coffee.png") == "a cup of coffee"
    assert kv.iget((DATA / "coffee.png").read_bytes()) == "a cup of coffee"


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_kind_is_found(kv: KVClient, edit: str) -> None:
    edited = EDITS[edit](Image.open(DATA / "astronaut.png").convert("RGB"))
    assert kv.iget(edited) == "astronaut: Eileen Collins, NASA portrait"


@pytest.mark.parametrize("photo", ["camera.png", "chelsea.png", "motorcycle_right.png"])
def test_other_photos_are_not_found(kv: KVClient, photo: str) -> None:
    assert kv.iget(DATA / photo) is None


def test_nearest_lists_distances_in_order(kv: KVClient) -> None:
    found = kv.inearest(DATA / "coffee.png", limit=3, max_distance=288)
    assert found[0].metadata == "a cup of coffee" and found[0].distance == 0
    assert found[0].hash == hash_hex(hash_image(DATA / "coffee.png"))
    assert [m.distance for m in found] == sorted(m.distance for m in found)


def test_latest_iset_wins(kv: KVClient) -> None:
    kv.iset(DATA / "coins.png", "some coins")
    kv.iset(DATA / "coins.png", "coins on a table")
    assert kv.iget(DATA / "coins.png") == "coins on a table"


def test_bad_inputs_store_nothing(kv: KVClient, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((DATA / "coffee.png").read_bytes()[:2000])
    before = kv.status()
    for bad in (tmp_path / "missing.jpg", text, truncated):
        with pytest.raises(ImageError):
            kv.iset(bad, "never stored")
    with pytest.raises(InvalidRequest):
        kv.iset(DATA / "camera.png", "x" * (MAX_METADATA_BYTES + 1))
    assert kv.iget(DATA / "camera.png") is None
    after = kv.status()
    leader_before = max(n["commit_index"] for n in before)  # type: ignore[type-var]
    leader_after = max(n["commit_index"] for n in after)  # type: ignore[type-var]
    assert leader_after == leader_before


def test_cli_iset_iget(shared_cluster: LocalCluster) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(shared_cluster.hostfile, *args, timeout=None)

    assert cli("iset", str(DATA / "rocket.jpg"), "a rocket on the pad").returncode == 0
    found = cli("iget", str(DATA / "rocket.jpg"))
    assert (found.returncode, found.stdout) == (0, "a rocket on the pad\n")
    assert cli("iget", str(DATA / "page.png")).returncode == 1
    bad = cli("iset", "/nonexistent/photo.jpg", "x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_iset_survives_leader_failover(cluster: LocalCluster) -> None:
    with cluster.client(timeout=20) as kv:
        kv.iset(DATA / "coffee.png", "a cup of coffee")
        leader = cluster.wait_for_leader()
        cluster.kill(leader, signal.SIGKILL)
        kv.iset(DATA / "hubble_deep_field.jpg", "Hubble deep field")
        assert kv.iget(DATA / "hubble_deep_field.jpg") == "Hubble deep field"
        assert kv.iget(DATA / "coffee.png") == "a cup of coffee"
