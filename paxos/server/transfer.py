"""Snapshot transfer between peers: a server that lags too far fetches a peer's newest snapshot.

The fetching side streams the file into a temporary file, checks it whole
and only then renames it into place (``SnapshotFetcher``); the serving side
streams its newest snapshot file in chunks (``snapshot_chunks``).  Files are
read and written on the storage's snapshot thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import grpc

from paxos.common import limits
from paxos.common.files import DiskFull, disk_full_as, fsync_dir
from paxos.common.hostfile import Member
from paxos.consensus.messages import NodeId, Slot
from paxos.kv.statemachine import ClusterVersionTooNew
from paxos.replica import FetchedSnapshot
from paxos.server.addressbook import AddressBook
from paxos.server.peers import peer_channel
from paxos.server.standing import Standing
from paxos.server.storage import WalStorage
from paxos.storage import snapshot as snapshots
from protos import peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.server.tlsserver import ServerTls

log = logging.getLogger("paxos.server")


class SnapshotFetcher:
    """Fetches a peer's newest snapshot into this data dir: the replica's ``Transport.fetch_snapshot``."""

    def __init__(
        self,
        book: AddressBook,
        standing: Standing,
        storage: WalStorage,
        tls: ServerTls | None,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        """``on_failure`` hears of a full disk: the server cannot go on."""
        self._book = book
        self._standing = standing
        self._storage = storage
        self._tls = tls
        self._on_failure = on_failure

    def fetch(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        """Stream ``peer``'s newest snapshot into the data dir, then load it; ``done`` once, with None on failure."""

        def finished(task: asyncio.Task[FetchedSnapshot | None]) -> None:
            got: FetchedSnapshot | None = None
            if not task.cancelled():
                exc = task.exception()
                if isinstance(exc, DiskFull | ClusterVersionTooNew):
                    # The disk is full, or the peer's state is of a
                    # cluster version this release cannot run: stop.
                    self._on_failure(exc)
                    return
                if exc is not None:
                    log.warning("fetching a snapshot from %s failed: %s", self._book.name_of(peer), exc)
                else:
                    got = task.result()
            done(got)

        task = asyncio.get_running_loop().create_task(self._fetch(peer, after))
        task.add_done_callback(finished)

    async def _fetch(self, peer: NodeId, after: Slot) -> FetchedSnapshot | None:
        """Receive, check and install ``peer``'s newest snapshot; None if it has none newer than ``after``.

        The file is received into a temporary file and only renamed into
        place once it checked out whole; on any failure the temporary file
        is removed, so a transfer is started again, never half-installed.
        """
        member = self._book.members[peer]
        directory = self._storage.snapshot_dir
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"from-{member.name}{snapshots.TMP_SUFFIX}"
        loop = asyncio.get_running_loop()
        writer = self._storage.snapshot_thread
        log.info("fetching a snapshot newer than slot %d from %s", after, member.name)
        try:
            total = await self._receive_file(member, peer, after, tmp)
            if total == 0:
                log.info("%s has no snapshot newer than slot %d", member.name, after)
                return None
            info, store = await loop.run_in_executor(writer, snapshots.load, tmp)
            if info.applied_index <= after or info.cluster_id != self._standing.cluster_id:
                log.info(
                    "ignored a snapshot at slot %d from %s (not newer than %d, or of another cluster)",
                    info.applied_index,
                    member.name,
                    after,
                )
                return None
            await loop.run_in_executor(writer, _install_snapshot_file, tmp, info.applied_index)
        finally:
            await loop.run_in_executor(writer, functools.partial(tmp.unlink, missing_ok=True))
        log.info("installed the snapshot at slot %d from %s (%d bytes)", info.applied_index, member.name, total)
        return FetchedSnapshot(info.applied_index, store)

    async def _receive_file(self, member: Member, peer: NodeId, after: Slot, tmp: Path) -> int:
        """Stream the peer's snapshot into ``tmp`` and fsync it; the bytes received."""
        loop = asyncio.get_running_loop()
        writer = self._storage.snapshot_thread
        request = peer_pb2.SnapshotRequest(
            sender=self._standing.node_id, cluster_id=self._standing.cluster_id, receiver=peer, after=after
        )
        total = 0
        writing = f"a snapshot received from {member.name}"
        f = await loop.run_in_executor(writer, _open_for_writing, tmp, writing)
        channel, metadata = peer_channel(member, self._tls)
        try:
            async with channel:
                call = peer_pb2_grpc.PeerStub(channel).FetchSnapshot(request, metadata=metadata)
                while True:
                    # A peer that goes quiet is given up on, not waited for.
                    chunk = await asyncio.wait_for(call.read(), limits.SNAPSHOT_CHUNK_SECONDS)
                    if chunk is grpc.aio.EOF:
                        break
                    assert isinstance(chunk, peer_pb2.SnapshotChunk)
                    total += len(chunk.data)
                    if len(chunk.data) > limits.SNAPSHOT_CHUNK_BYTES or total > limits.MAX_SNAPSHOT_BYTES:
                        call.cancel()
                        raise ValueError(f"{member.name} sent a snapshot chunk or snapshot over the size limit")
                    await loop.run_in_executor(writer, _write_to, f, chunk.data, tmp, writing)
            await loop.run_in_executor(writer, _flush_and_sync, f, tmp, writing)
        finally:
            await loop.run_in_executor(writer, _close_written, f)
        return total


def _open_for_writing(path: Path, writing: str) -> BinaryIO:
    with disk_full_as(path, writing):
        return open(path, "wb")


def _write_to(f: BinaryIO, data: bytes, path: Path, writing: str) -> None:
    with disk_full_as(path, writing):
        f.write(data)


def _flush_and_sync(f: BinaryIO, path: Path, writing: str) -> None:
    with disk_full_as(path, writing):
        f.flush()
        os.fsync(f.fileno())


def _close_written(f: BinaryIO) -> None:
    try:
        f.close()
    except OSError:
        pass  # flushed already unless a write failed, and then that failure is the one reported


def _install_snapshot_file(tmp: Path, applied_index: Slot) -> None:
    """Make a checked snapshot file the newest snapshot of this data dir (on the snapshot thread)."""
    os.replace(tmp, tmp.parent / snapshots.file_name(applied_index))
    fsync_dir(tmp.parent)
    snapshots.prune(tmp.parent)


async def snapshot_chunks(directory: Path, after: Slot) -> AsyncIterator[peer_pb2.SnapshotChunk]:
    """The newest snapshot file in ``directory``, in chunks; nothing if it is not newer than ``after``."""
    files = snapshots.snapshot_files(directory)
    if not files or int(files[0].name.removesuffix(snapshots.SUFFIX)) <= after:
        return  # nothing newer: an empty stream
    loop = asyncio.get_running_loop()
    try:
        # Opened before it can be pruned: the open file stays readable.
        f = await loop.run_in_executor(None, open, files[0], "rb")
    except FileNotFoundError:
        return
    try:
        while True:
            data = await loop.run_in_executor(None, f.read, limits.SNAPSHOT_CHUNK_BYTES)
            if not data:
                return
            yield peer_pb2.SnapshotChunk(data=data)
    finally:
        f.close()
