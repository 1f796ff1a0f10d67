"""Storage faults on real servers: a damaged log, a torn tail, a full disk.

A byte flipped in a complete record of a stopped follower's log makes it
refuse to start (exit 4, naming the file and offset) while the others keep
the write; a log cut short in its last record (a crash mid-write) is still
trimmed and the server starts.  A leader whose disk fills while it takes
writes stops with exit 5 and one line naming the file and the bytes free,
another leader takes over, and a restart on the still-full disk stops the
same way.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import KVClient
from client.retry import KVError
from paxos import __main__ as server_main
from paxos.common.files import DiskFull, write_atomically
from paxos.common.hostfile import parse_hostfile
from paxos.consensus.messages import AcceptRecord
from paxos.kv.statemachine import StateMachine
from paxos.server.service import SNAPSHOT_DIR, _WalStorage
from paxos.storage.snapshot import SNAPSHOT_WRITING, SnapshotMember, write_snapshot
from paxos.storage.wal import Wal
from tests.harness.cli import run_server
from tests.harness.polling import wait_until
from tests.harness.walfiles import read_records
from tools.localcluster import LocalCluster, NodeExited

START_MARK = "=== paxos.local: starting"
HEADER_BYTES = 12  # a log record's length word and two checksums


def _newest_segment(data_dir: Path) -> Path:
    return sorted((data_dir / "wal").glob("*.wal"))[-1]


def _last_run_log(cluster: LocalCluster, name: str) -> str:
    """The server's output since it was last started."""
    text = cluster.log_path(name).read_text(encoding="utf-8", errors="replace")
    return text[text.rindex(START_MARK) :]


def _exit_code(cluster: LocalCluster, name: str, timeout: float = 20.0) -> int:
    """Wait for ``name`` to exit on its own; its exit code."""
    wait_until(lambda: not cluster.is_running(name), f"{name} to exit", timeout=timeout)
    codes = dict(cluster.reap_exited())
    return codes[name]


def _started_cluster(
    directory: Path, data_dirs: Callable[[LocalCluster], None] | None = None
) -> tuple[LocalCluster, str]:
    """Three servers running with a leader; the cluster and its leader's name.

    Their ports are picked free, and another process on this shared machine
    may take one before a server binds it: the cluster is then started anew
    on other ports, at most three times.  ``data_dirs`` may point the
    servers' data dirs elsewhere (it sees each new cluster).
    """
    for attempt in range(3):
        cluster = LocalCluster(directory / f"start{attempt}", nodes=3)
        if data_dirs is not None:
            data_dirs(cluster)
        cluster.start()
        try:
            return cluster, cluster.wait_for_leader()
        except NodeExited as exc:
            cluster.stop()
            if "address in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _follower(cluster: LocalCluster, leader: str) -> str:
    return next(name for name in cluster.names if name != leader)


def test_flipped_byte_in_the_last_record_is_refused_and_a_torn_one_dropped(tmp_path: Path) -> None:
    cluster, leader = _started_cluster(tmp_path)
    with cluster, cluster.client(timeout=20.0) as kv:
        kv.set("kept", "acknowledged")
        follower = _follower(cluster, leader)
        # The follower holds the write in its own log before it is stopped.
        wait_until(lambda: _local_get(cluster, follower, "kept") == "acknowledged", f"{follower} to apply the write")
        assert cluster.kill(follower, signal.SIGTERM) == 0
        # Its log as a crash right after it accepted the write (and fsynced
        # that, so the leader could count its vote) leaves it: the accept last.
        segment = _newest_segment(cluster.data_dir(follower))
        records = read_records(segment)
        data = segment.read_bytes()
        accepts = [i for i, (_, r) in enumerate(records) if isinstance(r, AcceptRecord) and _holds(r, b"acknowledged")]
        i = accepts[-1]
        last = records[i][0]
        end = records[i + 1][0] if i + 1 < len(records) else len(data)
        intact = data[:end]
        segment.write_bytes(intact)
        middle = (last + HEADER_BYTES + end) // 2  # the middle of the accept's payload

        damaged = bytearray(intact)
        damaged[middle] ^= 0x10
        segment.write_bytes(bytes(damaged))
        cluster.start_node(follower)
        assert _exit_code(cluster, follower) == 4
        output = _last_run_log(cluster, follower)
        assert f"{segment}: damaged record at byte {last} of {len(intact)}" in output
        assert "--join" in output and "backup" in output
        assert "Traceback" not in output
        assert segment.read_bytes() == bytes(damaged), "the damaged log is left as it was"
        assert kv.get("kept") == "acknowledged"  # the other two still hold it

        segment.write_bytes(intact[:middle])  # a crash in the middle of writing the last record
        cluster.start_node(follower)
        cluster.wait_for_nodes(names=[follower])
        assert f"{segment}: dropping torn tail at byte {last}" in _last_run_log(cluster, follower)
        wait_until(lambda: _local_get(cluster, follower, "kept") == "acknowledged", f"{follower} to hold the write")
        cluster.check_alive()


def _holds(record: AcceptRecord, text: bytes) -> bool:
    return any(text in command for command in record.value)


def _local_get(cluster: LocalCluster, name: str, key: str) -> str | None:
    [member] = [m for m in parse_hostfile(cluster.hostfile) if m.name == name]
    try:
        with KVClient([member], timeout=2.0) as one:
            return one.get(key, consistency="local")
    except KVError:
        return None


# ----------------------------------------------------------------- disk full


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], None]]:
    """Mounts small tmpfs file systems; every one is unmounted at the end, whatever happened."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
        mounted.append(path)

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(directory: Path) -> None:
    """Write a file beside the data dir until its file system has no room left."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            block = bytes(size)
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break


class _Writer(threading.Thread):
    """Keeps writing new keys; remembers the ones acknowledged."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acknowledged: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with self.cluster.client(timeout=5.0) as kv:
            n = 0
            while not self.done.wait(0.005):
                n += 1
                try:
                    kv.set(f"w{n}", f"value {n}")
                except KVError:  # a failover: the outcome is unknown, so it is not counted
                    continue
                self.acknowledged.append(f"w{n}")


def _disk_full_line(output: str, under: Path) -> str:
    lines = [line for line in output.splitlines() if "disk full" in line]
    assert len(lines) == 1, output
    [line] = lines
    assert re.search(rf"could not write {re.escape(str(under))}/\S+ \(", line), line
    assert re.search(r"; \d+ bytes free there", line), line
    assert "Traceback" not in output
    return line


def test_a_full_disk_stops_the_leader_with_exit_5_at_run_time_and_at_restart(
    tmp_path: Path, tmpfs: Callable[[Path, str], None]
) -> None:
    disks = {name: tmp_path / f"disk-{name}" for name in ("node1", "node2", "node3")}
    for disk in disks.values():
        tmpfs(disk, "8m")

    def on_the_disks(cluster: LocalCluster) -> None:
        for name in cluster.names:
            cluster.node_args[name] = ["--data-dir", str(disks[name] / f"data-{cluster.directory.name}")]

    cluster, leader = _started_cluster(tmp_path, on_the_disks)
    data_dir = disks[leader] / f"data-{cluster.directory.name}"
    with cluster, cluster.client(timeout=20.0) as kv:
        writer = _Writer(cluster)
        writer.start()
        try:
            wait_until(lambda: len(writer.acknowledged) >= 20, "writes to be acknowledged")
            _fill(disks[leader])
            assert _exit_code(cluster, leader, timeout=30) == 5
            line = _disk_full_line(_last_run_log(cluster, leader), data_dir)
            assert "write-ahead log" in line or "snapshot" in line, line

            # Another leader takes the writes.
            before = len(writer.acknowledged)
            assert cluster.wait_for_leader() != leader
            wait_until(lambda: len(writer.acknowledged) >= before + 20, "writes acknowledged by the new leader")

            cluster.start_node(leader)  # its disk is still full
            assert _exit_code(cluster, leader, timeout=30) == 5
            _disk_full_line(_last_run_log(cluster, leader), data_dir)
        finally:
            writer.done.set()
            writer.join(timeout=30)
        for key in writer.acknowledged:
            assert kv.get(key) == f"value {key[1:]}", key
        cluster.check_alive()


def test_files_written_whole_and_a_new_data_dir_name_a_full_disk(
    tmp_path: Path, tmpfs: Callable[[Path, str], None]
) -> None:
    disk = tmp_path / "disk"
    tmpfs(disk, "256k")
    _fill(disk)
    snapshots = disk / "snapshots"
    with pytest.raises(DiskFull) as err:
        write_atomically(snapshots, "1.snap", [bytes(64 * 1024)], writing=SNAPSHOT_WRITING)
    assert str(err.value).startswith(f"disk full: could not write {snapshots / '1.snap.tmp'} ({SNAPSHOT_WRITING})")
    assert list(snapshots.iterdir()) == [], "the partial file is removed"

    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("a 127.0.0.1:1\n")
    result = run_server(hostfile, "a", disk / "data")
    assert result.returncode == 5, result.stderr
    _disk_full_line(result.stderr, disk / "data")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_snapshot_that_finds_the_disk_full_stops_the_server(
    tmp_path: Path, tmpfs: Callable[[Path, str], None]
) -> None:
    """Not retried later like other snapshot failures: the server's storage reports it as a failure."""
    disk = tmp_path / "disk"
    tmpfs(disk, "256k")
    failures: list[BaseException] = []
    outcomes: list[bool] = []
    wal, _ = Wal.open(tmp_path / "wal")
    storage = _WalStorage(wal, disk / "snapshots", lambda: (1, []), failures.append, book_dir=tmp_path)
    _fill(disk)

    async def save() -> None:
        store = StateMachine()
        store.apply(1, ())  # something to write: the snapshot at slot 1
        storage.save_snapshot(store.freeze(), outcomes.append)
        deadline = asyncio.get_running_loop().time() + 20
        while not failures and not outcomes and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(save())
    finally:
        storage.close()
    assert outcomes == [], "a full disk is not left to a later retry"
    [failure] = failures
    assert isinstance(failure, DiskFull)
    assert str(failure).startswith(f"disk full: could not write {disk / 'snapshots'}/")
    assert SNAPSHOT_WRITING in str(failure)


def test_a_restore_that_finds_the_disk_full_exits_5_and_leaves_nothing(
    tmp_path: Path, tmpfs: Callable[[Path, str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    store = StateMachine()
    store.apply(1, ())
    backup = write_snapshot(tmp_path / "backup", store.freeze(), 1, [SnapshotMember(1, "a", "127.0.0.1:1")])
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("a 127.0.0.1:1\n")
    disk = tmp_path / "disk"
    tmpfs(disk, "256k")
    _fill(disk)
    # Room for the lock and meta files (a page each), none for the snapshot.
    filler = disk / "filler"
    os.truncate(filler, filler.stat().st_size - 2 * 4096)
    target = disk / "data"
    code = server_main.main(["restore", str(backup), "-h", str(hostfile), "-n", "a", "--data-dir", str(target)])
    err = capsys.readouterr().err
    assert code == 5, err
    assert err.startswith(f"error: disk full: could not write {target / SNAPSHOT_DIR}/"), err
    assert SNAPSHOT_WRITING in err and "nothing was restored" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not target.exists()
