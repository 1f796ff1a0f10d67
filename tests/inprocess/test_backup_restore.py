"""Backup of a running cluster, and restore into a new one: same keys, images and exactly-once sessions."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from client import cli
from client.kv import KVClient
from paxos import __main__ as server_main
from paxos.common import limits
from paxos.server.service import SNAPSHOT_DIR
from paxos.storage import snapshot
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.inprocess import InProcessCluster, in_process_cluster
from tests.harness.polling import wait_until

HASH = bytes(range(limits.IMAGE_HASH_BYTES))


def _write(address: str, command: kv_pb2.Command) -> kv_pb2.WriteReply:
    with grpc.insecure_channel(address) as channel:
        reply: kv_pb2.WriteReply = kv_pb2_grpc.KVStub(channel).Write(kv_pb2.WriteRequest(command=command), timeout=10)
        return reply


def _register(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = kv_pb2_grpc.KVStub(channel).Register(kv_pb2.RegisterRequest(), timeout=10)
        assert reply.status == kv_pb2.OK, reply
        return int(reply.session_id)


def _image_lookup(address: str, h: bytes) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        reply = kv_pb2_grpc.KVStub(channel).ImageGet(
            kv_pb2.ImageGetRequest(hash=h, max_distance=8, limit=3), timeout=10
        )
        return [m.metadata for m in reply.matches]


def _leader_address(cluster: InProcessCluster) -> str:
    leader = wait_until(cluster.leader, "a leader")
    return next(m.address for m in cluster.members if m.name == leader)


def _hostfile(cluster: InProcessCluster, path: Path) -> Path:
    path.write_text("".join(f"{m.name} {m.address}\n" for m in cluster.members))
    return path


def test_backup_then_restore_into_a_fresh_cluster_gives_identical_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup.snap"
    with in_process_cluster(tmp_path / "old", 3, snapshot_every=50) as old:
        address = _leader_address(old)
        session = _register(address)
        retried = kv_pb2.Command(session_id=session, seq=0, first_unacked=0)
        retried.set.key, retried.set.value = "counter", "first"
        assert _write(address, retried).status == kv_pb2.OK
        image = kv_pb2.Command(session_id=session, seq=1, first_unacked=0)
        image.iset.hashes.append(HASH)
        image.iset.metadata = "a photo"
        assert _write(address, image).status == kv_pb2.OK
        with KVClient(old.members, timeout=10) as kv:
            kv.set("counter", "second")  # a retry of the first write must not undo this
            for i in range(120):
                kv.set(f"k{i}", f"v{i}")
            kv.delete("k7")
            hostfile = _hostfile(old, tmp_path / "old-hostfile.txt")
            code = cli.main(["-h", str(hostfile), "backup", str(backup)], client_factory=lambda h, t, tls: kv)
            printed = capsys.readouterr()
            assert code == cli.EXIT_OK, printed.err
            expected = {f"k{i}": f"v{i}" for i in range(120) if i != 7} | {"counter": "second"}
            covered = snapshot.verify(backup).applied_index
            assert printed.out.strip() == str(covered) and covered >= 123

    new_root = tmp_path / "new"
    with in_process_cluster(new_root, 3, snapshot_every=50) as probe:
        members = probe.members  # the new cluster's names and ports
        probe_hostfile = _hostfile(probe, tmp_path / "new-hostfile.txt")
    for member in members:  # the probe's data dirs are set aside; the new servers start from the backup
        (new_root / member.name).rename(new_root / f"{member.name}.unused")
        code = server_main.main(
            [
                "restore",
                str(backup),
                "-h",
                str(probe_hostfile),
                "-n",
                member.name,
                "--data-dir",
                str(new_root / member.name),
            ]
        )
        assert code == 0
    new = InProcessCluster(new_root, 3, members=members, snapshot_every=50)
    try:
        new.start()
        address = _leader_address(new)
        with KVClient(members, timeout=10) as kv:
            for key, value in expected.items():
                assert kv.get(key) == value, key
            assert kv.get("k7") is None
            # The client that wrote before the backup retries: applied once, not again.
            assert _write(address, retried).status == kv_pb2.OK
            assert kv.get("counter") == "second"
            assert _image_lookup(address, HASH) == ["a photo"]
            kv.set("after-restore", "yes")
            assert kv.get("after-restore") == "yes"
    finally:
        new.close()


@pytest.fixture(scope="module")
def good_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A backup of a one-server cluster, and its hostfile: made once, only read by the tests."""
    tmp_path = tmp_path_factory.mktemp("good-backup")
    with in_process_cluster(tmp_path / "c", 1) as cluster:
        with KVClient(cluster.members, timeout=10) as kv:
            wait_until(cluster.leader, "a leader")
            kv.set("k", "v")
            path = tmp_path / "good.snap"
            assert kv.backup(path) >= 1
        hostfile = _hostfile(cluster, tmp_path / "hostfile.txt")
    return path, hostfile


def _restore(backup: Path, hostfile: Path, data_dir: Path) -> int:
    return server_main.main(["restore", str(backup), "-h", str(hostfile), "-n", "s0", "--data-dir", str(data_dir)])


def test_a_damaged_backup_is_refused_and_changes_nothing(tmp_path: Path, good_backup: tuple[Path, Path]) -> None:
    path, hostfile = good_backup
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    damaged = tmp_path / "damaged.snap"
    damaged.write_bytes(bytes(data))
    target = tmp_path / "fresh"
    assert _restore(damaged, hostfile, target) == server_main.EXIT_DATA
    assert not target.exists()


def test_a_backup_of_another_format_is_refused(tmp_path: Path, good_backup: tuple[Path, Path]) -> None:
    path, hostfile = good_backup
    data = path.read_bytes()
    other = tmp_path / "other.snap"
    other.write_bytes(data[:16] + (snapshot.FORMAT + 1).to_bytes(4, "little") + data[20:])
    assert _restore(other, hostfile, tmp_path / "fresh") == server_main.EXIT_DATA
    assert not (tmp_path / "fresh").exists()


def test_a_data_dir_that_is_not_empty_is_refused_and_kept(tmp_path: Path, good_backup: tuple[Path, Path]) -> None:
    path, hostfile = good_backup
    target = tmp_path / "used"
    target.mkdir()
    (target / "something").write_text("keep me")
    assert _restore(path, hostfile, target) == server_main.EXIT_DATA
    assert [p.name for p in target.iterdir()] == ["something"]


def test_a_missing_backup_file_is_a_usage_error(tmp_path: Path, good_backup: tuple[Path, Path]) -> None:
    _, hostfile = good_backup
    assert _restore(tmp_path / "nope.snap", hostfile, tmp_path / "fresh") == server_main.EXIT_USAGE


def test_restored_snapshot_names_the_new_cluster(tmp_path: Path, good_backup: tuple[Path, Path]) -> None:
    path, hostfile = good_backup
    target = tmp_path / "fresh"
    assert _restore(path, hostfile, target) == 0
    [restored] = snapshot.snapshot_files(target / SNAPSHOT_DIR)
    assert snapshot.verify(restored).applied_index == snapshot.verify(path).applied_index
    assert snapshot.verify(restored).members[0].name == "s0"


def test_a_backup_over_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    from client.kv import Unavailable

    tls_dir = tmp_path / "tls"
    with in_process_cluster(tmp_path, 3, tls_dir) as cluster:
        wait_until(cluster.leader, "a leader")
        with KVClient(cluster.members, timeout=10, tls_dir=tls_dir) as kv:
            kv.set("k", "v")
            path = tmp_path / "tls-backup.snap"
            covered = kv.backup(path)
        assert snapshot.verify(path).applied_index == covered >= 1
        with KVClient(cluster.members, timeout=1) as plaintext, pytest.raises(Unavailable):
            plaintext.backup(tmp_path / "refused.snap")
        assert not (tmp_path / "refused.snap").exists()
