"""The data dir's meta file: who this server is, and the checks that a data dir is its own and whole.

The meta file is written when a server first starts on an empty data dir
(or joins a running cluster); from then on it says which server, member
and cluster the data dir belongs to, and in which format its log is.
A data dir made for another server, another cluster or an older format is
refused, and so is one whose log is gone (the server would have forgotten
its promises and votes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from paxos import incarnation as incarnations
from paxos.common import limits
from paxos.common.files import fsync_dir, write_atomically
from paxos.common.hostfile import Member
from paxos.common.identity import bootstrap_ids, format_id, parse_id
from paxos.consensus.membership import Membership
from paxos.consensus.messages import NodeId
from paxos.storage import snapshot as snapshots
from paxos.storage.datadir import LOCK_FILE, DataDirError

META_FILE = "paxoskv-meta.json"
SNAPSHOT_DIR = "snapshots"  # in the data dir
WAL_DIR = "wal"  # in the data dir
# The data dir layout.  2: member ids (ballots carry them, not hostfile line
# numbers), and log_pb2.LogCommand in the log's slots.  Before it (no
# "format" in the meta file): the client API's kv_pb2.Command, which this
# version does not read.  Log records later gained an end mark (paxos/storage/wal.py)
# under the same number: logs written before it are read as they are, while
# an older paxoskv refuses a log written since as damaged (exit 4).
DATA_FORMAT = 2


@dataclass(frozen=True)
class Identity:
    """Who this server is, fixed when its cluster was created or it joined (paxos/common/identity.py)."""

    cluster_id: int
    member_id: NodeId
    # The founding members' ids, by name (only its own for a server that
    # joined later: the log and snapshots hold the others').
    ids: dict[str, NodeId]
    # This data dir's incarnation (paxos/incarnation.py): random, made with
    # the meta file, sent with every peer message.
    incarnation: int
    joining: bool = False  # started with --join and not yet in the configuration


@dataclass(frozen=True)
class JoinTarget:
    """What a server started with --join learned from the running cluster."""

    cluster_id: int
    membership: Membership


def check_data_dir(data_dir: Path, name: str, members: list[Member], join: JoinTarget | None = None) -> Identity:
    """This server's identity from its data dir, stamping a new one first.

    A new data dir gets ids computed from the hostfile (a new cluster) or,
    with ``join``, the running cluster's id and a fresh random member id:
    a server added under the name of one removed earlier is a new member,
    so nothing addressed to the old one can reach it.  From then on the
    ids come from the data dir, so the hostfile may change.  A data dir
    made for another server, another cluster or an older format is refused.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_path = data_dir / META_FILE
    if not meta_path.exists():
        if any(p.name != LOCK_FILE for p in data_dir.iterdir()):
            raise DataDirError(f"{data_dir} is not empty and holds no {META_FILE}; refusing to use it as a data dir")
        # The log's directory exists before the meta file does, so a meta
        # file without it means a lost log (see check_log_dir).
        (data_dir / WAL_DIR).mkdir()
        fsync_dir(data_dir)
        incarnation = incarnations.new_incarnation()
        if join is not None:
            if join.membership.named(name) is not None:
                raise DataDirError(
                    f"the cluster already has a member named {name!r}; to replace it, remove it first "
                    f"(python -m client members remove {name}), then start this server with --join"
                )
            taken = join.membership.ids
            member_id = 1 + int.from_bytes(os.urandom(8), "big") % limits.MAX_MEMBER_ID
            while member_id in taken:
                member_id = 1 + int.from_bytes(os.urandom(8), "big") % limits.MAX_MEMBER_ID
            meta = {
                "format": DATA_FORMAT,
                "name": name,
                "member_id": format_id(member_id),
                "cluster_id": format_id(join.cluster_id),
                "members": {name: format_id(member_id)},
                "incarnation": format_id(incarnation),
                "joining": True,
            }
            _write_meta(data_dir, meta)
            return Identity(join.cluster_id, member_id, {name: member_id}, incarnation, joining=True)
        names = sorted(m.name for m in members)
        cluster_id, ids = bootstrap_ids(members)
        meta = {
            "format": DATA_FORMAT,
            "name": name,
            "member_id": format_id(ids[name]),
            "cluster_id": format_id(cluster_id),
            "members": {n: format_id(ids[n]) for n in names},
            "incarnation": format_id(incarnation),
        }
        _write_meta(data_dir, meta)
        return Identity(cluster_id, ids[name], ids, incarnation)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{meta_path} cannot be read ({exc})") from None
    if meta.get("format") != DATA_FORMAT:
        written_by = "an older paxoskv" if "format" not in meta else f"a paxoskv with data format {meta['format']!r}"
        raise DataDirError(
            f"{data_dir} was written by {written_by}, and this one (data format {DATA_FORMAT}) cannot read its log; "
            "there is no migration: start this server on a fresh --data-dir"
        )
    if meta.get("name") != name:
        raise DataDirError(
            f"{data_dir} belongs to server {meta.get('name')!r}, not {name!r}; pass that server's own --data-dir"
        )
    try:
        stored = {n: parse_id(i) for n, i in meta["members"].items()}
        incarnation = int(meta["incarnation"], 16) if "incarnation" in meta else incarnations.NONE
        if incarnation != incarnations.NONE and not incarnations.valid(incarnation):
            raise ValueError(f"incarnation {meta['incarnation']!r} is out of range")
        identity = Identity(
            parse_id(meta["cluster_id"]),
            parse_id(meta["member_id"]),
            stored,
            incarnation,
            joining=meta.get("joining") is True,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataDirError(f"{meta_path} is damaged ({exc!r})") from None
    check_log_dir(data_dir, name)
    if identity.incarnation == incarnations.NONE:
        # Written by a release from before incarnations: its data is intact,
        # so it gets one now, and the others record it when they first hear it.
        identity = dataclasses.replace(identity, incarnation=incarnations.new_incarnation())
        meta["incarnation"] = format_id(identity.incarnation)
        _write_meta(data_dir, meta)
    if join is not None and join.cluster_id != identity.cluster_id:
        raise DataDirError(
            f"{data_dir} belongs to cluster {format_id(identity.cluster_id)}, but the servers in the hostfile run "
            f"cluster {format_id(join.cluster_id)}; check the hostfile, or use a fresh --data-dir"
        )
    return identity


def _write_meta(data_dir: Path, meta: Mapping[str, object]) -> None:
    chunks = [(json.dumps(meta, indent=1) + "\n").encode()]
    write_atomically(data_dir, META_FILE, chunks, writing="the data dir's identity and membership file")


def repair_hint(name: str) -> str:
    """How to bring back a server whose data dir was lost or damaged (one line)."""
    # Not "restore a backup": a restored data dir is a new incarnation, which
    # the others refuse, and an old copy of this one has forgotten promises.
    return (
        f"to bring {name} back: python -m client members remove {name}, then start it on an empty --data-dir "
        f"with --join and add it (python -m client members add {name} HOST:PORT, then members promote {name}; "
        "or members sync)"
    )


def check_log_dir(data_dir: Path, name: str) -> None:
    """Refuse a data dir whose log was lost: the server would have forgotten its promises and votes."""
    wal_dir = data_dir / WAL_DIR
    if not wal_dir.is_dir():
        raise DataDirError(
            f"{data_dir} has a {META_FILE} but no {WAL_DIR}/ directory: its log, with the promises and votes "
            f"this server gave, is lost, and starting without it could lose acknowledged writes; {repair_hint(name)}"
        )
    snapshot_dir = data_dir / SNAPSHOT_DIR
    has_snapshot = snapshot_dir.is_dir() and bool(snapshots.snapshot_files(snapshot_dir))
    if has_snapshot and not any(wal_dir.glob("*.wal")):
        # Compaction always keeps the newest segment: an empty log beside a
        # snapshot was deleted.
        raise DataDirError(
            f"{wal_dir} holds no log segment but {snapshot_dir} holds a snapshot: the log, with the promises "
            f"and votes this server gave, is lost; {repair_hint(name)}"
        )


def mark_joined(data_dir: Path) -> None:
    """The configuration holds this joining server now: it is a member from here on."""
    meta_path = data_dir / META_FILE
    meta = json.loads(meta_path.read_text())
    meta.pop("joining", None)
    _write_meta(data_dir, meta)


def data_dir_is_joining(data_dir: Path) -> bool | None:
    """Whether ``data_dir`` belongs to a server still waiting to join; None when it holds no server yet."""
    try:
        meta = json.loads((data_dir / META_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{data_dir / META_FILE} cannot be read ({exc})") from None
    return isinstance(meta, dict) and meta.get("joining") is True
