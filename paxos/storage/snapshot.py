"""Snapshots of the replicated state as of one applied slot, in files.

A server writes one before it forgets the log below that slot, streams one
to a peer that needs slots it has forgotten, and a backup is one.  The file
format is in ``paxos/common/snapshotfile.py``; this module puts a state machine in
and takes one out, and keeps a data dir's snapshot folder.

Files are written atomically: a temporary file in the same directory,
fsynced, renamed to ``NNNNNNNNNNNNNNNNNNNN.snap`` (the applied index), and
the directory fsynced.  A crash at any step leaves either no new snapshot or
a complete one; a leftover temporary file is removed on the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from paxos.common import limits
from paxos.common.files import fsync_dir, write_atomically
from paxos.common.snapshotfile import (
    FORMAT,
    MAGIC,
    SUFFIX,
    TMP_SUFFIX,
    SnapshotError,
    SnapshotInfo,
    SnapshotMember,
    encode_frames,
    file_name,
    info_of,
    iter_parts,
    verify,
)
from paxos.kv.statemachine import FrozenState, StateMachine
from protos import snapshot_pb2

__all__ = [
    "FORMAT",
    "MAGIC",
    "SUFFIX",
    "TMP_SUFFIX",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotMember",
    "encode_frames",
    "file_name",
    "fsync_dir",
    "header_for",
    "load",
    "prune",
    "remove_leftovers",
    "snapshot_files",
    "verify",
    "write_atomically",
    "write_snapshot",
]

log = logging.getLogger("paxos.snapshot")

SNAPSHOT_WRITING = "a snapshot of the state"


def header_for(frozen: FrozenState, cluster_id: int, members: Iterable[SnapshotMember]) -> snapshot_pb2.SnapshotHeader:
    """The header of ``frozen``: its configuration, or ``members`` (all voters) if it has none."""
    if frozen.membership is not None:
        listed = [
            snapshot_pb2.SnapshotMember(id=m.id, name=m.name, address=m.address, learner=not m.voter)
            for m in frozen.membership.members
        ]
    else:
        listed = [snapshot_pb2.SnapshotMember(id=m.id, name=m.name, address=m.address) for m in members]
    return snapshot_pb2.SnapshotHeader(
        applied_index=frozen.applied_index,
        cluster_id=cluster_id,
        members=listed,
        unreadable_commands=frozen.unreadable_commands,
        next_image_ref=frozen.next_image_ref,
        next_session_id=frozen.next_session_id,
        cluster_version=frozen.cluster_version,
    )


def write_snapshot(directory: Path, frozen: FrozenState, cluster_id: int, members: Iterable[SnapshotMember]) -> Path:
    """Write ``frozen`` as ``directory/<applied index>.snap``; may run on any thread."""
    header = header_for(frozen, cluster_id, members)
    chunks = encode_frames(header, frozen.parts())
    return write_atomically(directory, file_name(frozen.applied_index), chunks, writing=SNAPSHOT_WRITING)


def load(path: Path) -> tuple[SnapshotInfo, StateMachine]:
    """The state in ``path``, checked through to its end frame."""
    parts = iter_parts(path)
    header = next(parts).header

    def data_parts() -> Iterator[snapshot_pb2.SnapshotPart]:
        for part in parts:
            if part.WhichOneof("part") != "end":
                yield part

    try:
        store = StateMachine.restore(header, data_parts())
    except SnapshotError:
        raise
    except ValueError as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    return info_of(path, header), store


def rewrite_for_cluster(
    source: Path, directory: Path, cluster_id: int, members: Iterable[SnapshotMember]
) -> SnapshotInfo:
    """Copy a checked snapshot into ``directory`` as one of a new cluster (its header names that cluster)."""
    info = verify(source)
    parts = iter_parts(source)
    header = next(parts).header
    header.cluster_id = cluster_id
    del header.members[:]
    header.members.extend(snapshot_pb2.SnapshotMember(id=m.id, name=m.name, address=m.address) for m in members)

    def data_parts() -> Iterator[snapshot_pb2.SnapshotPart]:
        for part in parts:
            if part.WhichOneof("part") != "end":
                yield part

    path = write_atomically(
        directory, file_name(info.applied_index), encode_frames(header, data_parts()), writing=SNAPSHOT_WRITING
    )
    return verify(path)


# ------------------------------------------------------------ the directory


def snapshot_files(directory: Path) -> list[Path]:
    """Complete snapshot files in ``directory``, newest first (unchecked)."""
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        stem = path.name.removesuffix(SUFFIX)
        if len(stem) == 20 and stem.isdigit():
            found.append(path)
    return sorted(found, reverse=True)


def remove_leftovers(directory: Path) -> None:
    """Delete temporary files a crash left while writing a snapshot."""
    for tmp in directory.glob(f"*{TMP_SUFFIX}"):
        log.info("removing %s, left by a crash while writing a snapshot", tmp)
        tmp.unlink()


def prune(directory: Path, keep: int = limits.SNAPSHOTS_KEPT) -> None:
    """Keep the ``keep`` newest snapshots, delete the older ones."""
    for old in snapshot_files(directory)[keep:]:
        old.unlink()
    fsync_dir(directory)
