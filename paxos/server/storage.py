"""The server's storage: the write-ahead log and the snapshots, as the replica's ``Storage``.

The log is fsynced on a thread of its own and snapshots are written on
another; their results come back on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paxos.common.files import DiskFull
from paxos.consensus.messages import NodeId, Record, Slot
from paxos.kv.statemachine import FrozenState, StateMachine
from paxos.server.stats import FSYNC_BUCKETS, Histogram
from paxos.storage import snapshot as snapshots
from paxos.storage.incarnationbook import load_incarnation_book, save_incarnation_book
from paxos.storage.wal import Wal

log = logging.getLogger("paxos.server")


def load_newest_snapshot(directory: Path) -> tuple[StateMachine | None, list[tuple[Path, str]]]:
    """The state in the newest snapshot that reads back whole, and the damaged newer ones skipped."""
    skipped: list[tuple[Path, str]] = []
    if not directory.exists():
        return None, skipped
    snapshots.remove_leftovers(directory)
    for path in snapshots.snapshot_files(directory):
        try:
            info, store = snapshots.load(path)
        except snapshots.SnapshotError as exc:
            skipped.append((path, str(exc)))
            continue
        log.info("loaded the snapshot at slot %d from %s", info.applied_index, path)
        return store, skipped
    return None, skipped


class WalStorage:
    """The write-ahead log and the snapshots as the replica's storage.

    The log is fsynced on a thread of its own, and snapshots are written on
    another, so a snapshot being written never delays an acknowledgement.
    """

    def __init__(
        self,
        wal: Wal,
        snapshot_dir: Path,
        snapshot_header: Callable[[], tuple[int, list[snapshots.SnapshotMember]]],
        on_failure: Callable[[BaseException], None],
        book_dir: Path,
    ) -> None:
        self.wal = wal
        self.snapshot_dir = snapshot_dir
        self.book_dir = book_dir
        self._book = load_incarnation_book(book_dir)
        self._snapshot_header = snapshot_header
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self.snapshot_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._on_failure = on_failure
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)
        self.last_fsync_seconds = 0.0
        self._syncing = False
        self._compact_after_sync: Slot | None = None
        self.snapshots_saved = 0
        self.last_snapshot_seconds = 0.0
        self.last_snapshot_bytes = 0

    def log_bytes(self) -> int:
        return self.wal.total_bytes

    def save_snapshot(self, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        cluster_id, members = self._snapshot_header()
        future = asyncio.get_running_loop().run_in_executor(
            self.snapshot_thread, self._write_snapshot, frozen, cluster_id, members
        )
        future.add_done_callback(lambda f: self._snapshot_written(f, frozen.applied_index, done))

    def _write_snapshot(
        self, frozen: FrozenState, cluster_id: int, members: list[snapshots.SnapshotMember]
    ) -> tuple[float, int]:
        started = time.perf_counter()
        path = snapshots.write_snapshot(self.snapshot_dir, frozen, cluster_id, members)
        snapshots.prune(self.snapshot_dir)
        return time.perf_counter() - started, path.stat().st_size

    def _snapshot_written(
        self, future: asyncio.Future[tuple[float, int]], index: Slot, done: Callable[[bool], None]
    ) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, DiskFull):
            self._on_failure(exc)
            return
        if exc is not None:
            log.error(
                "could not write the snapshot at slot %d: %s; the log is kept and it is tried again later", index, exc
            )
            done(False)
            return
        self.last_snapshot_seconds, self.last_snapshot_bytes = future.result()
        self.snapshots_saved += 1
        try:
            done(True)
        except Exception as error:  # a bug in the replica: stop rather than idle
            self._on_failure(error)

    def compact(self, snapshot_index: Slot) -> None:
        # The log is changed only between fsyncs, never under one.
        if self._syncing:
            self._compact_after_sync = max(self._compact_after_sync or 0, snapshot_index)
            return
        freed = self.wal.compact(snapshot_index)
        if freed:
            log.info("log compacted up to slot %d: %d bytes freed", snapshot_index, freed)

    def newest_snapshot_index(self) -> Slot:
        files = snapshots.snapshot_files(self.snapshot_dir)
        return int(files[0].name.removesuffix(snapshots.SUFFIX)) if files else 0

    def recorded_incarnations(self) -> dict[NodeId, int]:
        return dict(self._book)

    def record_incarnation(self, member: NodeId, incarnation: int) -> None:
        # Written on the event loop, before the message goes on: once per
        # member and data dir, so the wait is rare and short.
        self._book[member] = incarnation
        save_incarnation_book(self.book_dir, self._book)

    def append(self, records: list[Record]) -> None:
        self.wal.append(records)

    def unsynced(self) -> bool:
        return self.wal.unsynced()

    def sync(self, done: Callable[[], None]) -> None:
        self._syncing = True
        future = asyncio.get_running_loop().run_in_executor(self.thread, self._timed_sync)
        future.add_done_callback(lambda f: self._synced(f, done))

    def _timed_sync(self) -> float:
        started = time.perf_counter()
        self.wal.sync()
        return time.perf_counter() - started

    def _synced(self, future: asyncio.Future[float], done: Callable[[], None]) -> None:
        self._syncing = False
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            # A failed fsync may have dropped the pages it was writing: the
            # log can no longer be trusted, so the server stops.
            self._on_failure(exc)
            return
        # Recorded here, on the event loop, so a scrape never sees half an update.
        self.last_fsync_seconds = future.result()
        self.fsync_seconds.observe(self.last_fsync_seconds)
        try:
            if self._compact_after_sync is not None:
                index, self._compact_after_sync = self._compact_after_sync, None
                self.compact(index)
            done()
        except Exception as error:  # a bug in the replica: stop rather than idle
            self._on_failure(error)

    def close(self) -> None:
        """Sync what is left and close the log; ``DiskFull`` if that last write found no room."""
        try:
            self.thread.submit(self.wal.close).result()
        finally:
            self.thread.shutdown()
            self.snapshot_thread.shutdown(wait=True, cancel_futures=True)
