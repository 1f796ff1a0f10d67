"""iset / iget against five real servers on loopback, over TLS (the certificates beside the hostfile)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from benchmarks.image_hash_eval import EDITS
from client import ImageError, InvalidRequest, KVClient
from client.images import hash_hex, hash_image
from paxos.common.limits import MAX_METADATA_BYTES
from tools.localcluster import LocalCluster

DATA = Path(skimage.data.data_dir)
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("images") / "cluster", nodes=5, tls=True) as c:
        c.wait_for_leader(timeout=60)
        yield c


@pytest.fixture(scope="module")
def kv(cluster: LocalCluster) -> Iterator[KVClient]:
    with cluster.client(timeout=20) as client:
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
    kv.iset(DATA / "chelsea.png", "a cat")
    kv.iset(DATA / "chelsea.png", "Chelsea the cat")
    assert kv.iget(DATA / "chelsea.png") == "Chelsea the cat"


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


def test_cli_iset_iget(cluster: LocalCluster) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client", "-h", str(cluster.hostfile), *args],
            capture_output=True, text=True, timeout=120, cwd=PROJECT,
        )  # fmt: skip

    assert cli("iset", str(DATA / "rocket.jpg"), "a rocket on the pad").returncode == 0
    found = cli("iget", str(DATA / "rocket.jpg"))
    assert (found.returncode, found.stdout) == (0, "a rocket on the pad\n")
    assert cli("iget", str(DATA / "page.png")).returncode == 1
    bad = cli("iset", "/nonexistent/photo.jpg", "x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_iset_survives_leader_failover(cluster: LocalCluster, kv: KVClient) -> None:
    leader = cluster.wait_for_leader()
    cluster.kill(leader, signal.SIGKILL)
    try:
        kv.iset(DATA / "hubble_deep_field.jpg", "Hubble deep field")
        assert kv.iget(DATA / "hubble_deep_field.jpg") == "Hubble deep field"
        assert kv.iget(DATA / "coffee.png") == "a cup of coffee"
    finally:
        cluster.start_node(leader)


def test_server_and_client_agree_on_hash_size() -> None:
    from client import images
    from paxos.common import limits

    assert limits.IMAGE_HASH_BYTES == images.HASH_BYTES
    assert limits.MAX_IMAGE_HASHES >= images.VARIANT_COUNT == len(images.index_hashes(DATA / "coffee.png"))
