"""The replicated key-value state machine.

Every server applies the same chosen commands in slot order, so everything
here is deterministic: no clocks, no randomness, no iteration over unordered
sets, and no setting of the server it runs on (such as --max-value-bytes).
Applying a chosen command depends on the log alone.  Besides the keys it
keeps, per client session, the results of recent writes, so a write retried
after a timeout or a leader change is applied at most once.

Sessions are opened through the log (a ``RegisterSession`` command), which
gives each the next number of a counter that only grows, so no id is ever
handed out twice.  At most ``limits.MAX_CLIENT_SESSIONS`` are kept: opening
one more evicts the least recently used, in apply order, the same on every
replica.  A write in a session that is not kept (evicted, or never opened) is
refused as expired and changes nothing, so eviction costs the evicted client
its session, never the at-most-once promise: a retry can no longer be taken
for a new write.

The log holds ``log_pb2.LogCommand``s (``paxos/kv/logcommand.py`` makes them);
``validate_command`` is the leader's check of a client's request before it
proposes it, with the limits of that server.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from paxos.common import limits, versions
from paxos.consensus.membership import Membership
from paxos.consensus.messages import Slot, Value
from paxos.kv import configuration
from paxos.kv.image_index import ImageIndex
from protos import kv_pb2, log_pb2, snapshot_pb2

log = logging.getLogger("paxos.statemachine")

# The first byte of every encoded RaiseClusterVersion command: its field's
# tag (number 4, length-delimited).
_RAISE_TAG = bytes([log_pb2.LogCommand.RAISE_CLUSTER_VERSION_FIELD_NUMBER << 3 | 2])


# A session's id: a number for one registered through the log, a string for
# one a client named itself before sessions were registered (kept from an
# older snapshot or log until it expires).  The two never compare equal.
SessionKey = int | str


class Outcome(enum.Enum):
    APPLIED = "applied"  # took effect, in this slot or an earlier one (a retry gets the first result)
    REFUSED = "refused"  # not applied, and never will be under this (session, seq): ``error`` says why
    # Not applied: the session is not kept (evicted, or never opened).  An
    # earlier copy may have applied before the session was evicted.
    EXPIRED = "expired"
    # This copy was skipped because the client had already moved past its
    # seq; an earlier copy may or may not have been applied, and its result
    # is forgotten.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Result:
    session: SessionKey
    seq: int
    outcome: Outcome = Outcome.APPLIED
    removed: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.APPLIED


class ClusterVersionTooNew(Exception):
    """The log raised the cluster version above what this release can run.

    Raised by ``apply`` (and by ``restore``, for a snapshot taken after such
    a raise) before anything of the raise is applied.  Every replica of this
    release stops at the same slot, so none applies what it cannot read:
    the server exits 4 with ``str(exc)``, naming the release to start.
    """

    def __init__(self, slot: Slot, version: int) -> None:
        super().__init__(versions.too_new_error(version))
        self.slot = slot
        self.version = version


@dataclass(frozen=True, slots=True)
class VersionRaised:
    """A ``RaiseClusterVersion`` that moved the cluster version, for the host."""

    slot: Slot
    version: int
    proposer: int


@dataclass(frozen=True, slots=True)
class Registration:
    """A session opened by a ``RegisterSession`` command, for the leader that proposed it."""

    proposer: int
    nonce: int
    session_id: int


# What applying one command reports: a client write's result, a session
# opened, or the cluster version raised.
Applied = Result | Registration | VersionRaised


def session_of(write: log_pb2.ClientWrite | kv_pb2.Command) -> SessionKey:
    """The session a write names: its registered session_id, else its client_id."""
    return write.session_id or write.client_id


@dataclass
class _Session:
    first_unacked: int = 0
    results: dict[int, Result] = field(default_factory=dict)
    # The freeze generation this object belongs to: a session shared with a
    # frozen copy is copied before it changes (see StateMachine.freeze).
    generation: int = 0
    # When a write last touched it: (slot, command's place in the slot).
    # Sessions are evicted least recently touched first.
    touched: tuple[int, int] = (0, 0)


def validate_key(key: str) -> str | None:
    """An error message for a bad key, or None."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size == 0:
        return "key must not be empty"
    if size > limits.MAX_KEY_BYTES:
        return f"key is {size} bytes; the limit is {limits.MAX_KEY_BYTES}"
    return None


def validate_command(cmd: log_pb2.ClientWrite | kv_pb2.Command, max_value_bytes: int) -> str | None:
    """An error message when the leader must not propose ``cmd``, or None.

    The leader's check, with its own ``max_value_bytes``; it admits nothing
    that ``applicability_error`` would refuse once the command is logged.
    The replica checks the log's copy of a client's command
    (``logcommand.from_client``); the two have the same fields.
    """
    if cmd.session_id and cmd.client_id:
        return "a write names either a session_id or a client_id, not both"
    if not cmd.session_id and not cmd.client_id:
        return "a write needs a session: open one with Register and send its session_id"
    if len(cmd.client_id.encode()) > limits.MAX_CLIENT_ID_BYTES:
        return f"client id must be 1 to {limits.MAX_CLIENT_ID_BYTES} bytes"
    error = _session_window_error(cmd.seq, cmd.first_unacked)
    if error:
        return error
    kind = cmd.WhichOneof("op")
    if kind == "set":
        value_size = len(cmd.set.value.encode("utf-8", "surrogatepass"))
        if value_size > max_value_bytes:
            return f"value is {value_size} bytes; the limit is {max_value_bytes}"
        return validate_key(cmd.set.key)
    if kind == "delete":
        return validate_key(cmd.delete.key)
    if kind == "iset":
        return validate_image_set(cmd.iset)
    return f"unsupported command {kind!r}"


def _session_window_error(seq: int, first_unacked: int) -> str | None:
    if not first_unacked <= seq < first_unacked + limits.SESSION_WINDOW:
        return f"sequence number {seq} is outside this client's window starting at {first_unacked}"
    return None


def validate_image_hash(h: bytes) -> str | None:
    if len(h) != limits.IMAGE_HASH_BYTES:
        return f"image hash is {len(h)} bytes; expected {limits.IMAGE_HASH_BYTES}"
    return None


def validate_image_set(op: log_pb2.ImageSetOp | kv_pb2.ImageSetOp) -> str | None:
    if not 1 <= len(op.hashes) <= limits.MAX_IMAGE_HASHES:
        return f"an image needs 1 to {limits.MAX_IMAGE_HASHES} hashes, got {len(op.hashes)}"
    for h in op.hashes:
        error = validate_image_hash(h)
        if error:
            return error
    size = len(op.metadata.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_METADATA_BYTES:
        return f"metadata is {size} bytes; the limit is {limits.MAX_METADATA_BYTES}"
    return None


@dataclass(frozen=True, slots=True)
class ImageMatch:
    hash: bytes  # the stored image's full-frame hash
    distance: int
    metadata: str


def applicability_error(write: log_pb2.ClientWrite) -> str | None:
    """Why a chosen client write cannot be applied to the state, or None.

    These are the only checks at apply time, and they read nothing but the
    command and constants of this code, so every replica gives the same
    answer.  Admission limits (key, value, metadata and client id sizes, how
    many hashes an image has) are a server's policy: the leader checks them
    with its own flags before proposing (``validate_command``), and once a
    command is chosen every replica applies it, whatever its own flags say.
    What remains is what the state itself needs:

    - a session (its id or, from older clients, a client id, not both) and a
      seq inside the session window: the results kept for exactly-once
      writes are keyed by them, and the window is what bounds a session's
      results without ever dropping one a retry may still need;
    - an operation this code knows;
    - image hashes of the index's fixed width, and at least one (the first
      names the image).
    """
    if write.session_id and write.client_id:
        return "a write names either a session id or a client id, not both"
    if not write.session_id and not write.client_id:
        return "a write needs a session"
    error = _session_window_error(write.seq, write.first_unacked)
    if error:
        return error
    match write.WhichOneof("op"):
        case "set" | "delete":
            return None
        case "iset":
            if not write.iset.hashes:
                return "an image needs at least one hash"
            for h in write.iset.hashes:
                error = validate_image_hash(h)
                if error:
                    return error
            return None
        case None:
            return "the write names no operation this server knows"
        case kind:
            raise AssertionError(f"client write op {kind!r} has no apply rule")


class StateMachine:
    def __init__(self, membership: Membership | None = None) -> None:
        self.data: dict[str, str] = {}
        self.applied_index: Slot = 0
        # The configuration as of applied_index: the newest one chosen in the
        # log, or before any, the one the cluster was created with (None
        # where nobody needs names, as in unit tests).
        self.membership: Membership | None = membership
        # Chosen commands that do not decode, or whose kind this code does
        # not know.  The leader encodes every command it proposes itself
        # (paxos/kv/logcommand.py), so none can come from this version's
        # proposals: only from a damaged or foreign log, or from a newer
        # version's new kind.  They carry no (client_id, seq) that a waiter
        # could be matched to, so they are only counted (and logged once).
        self.unreadable_commands = 0
        # The id the next registered session gets; it only grows.
        self.next_session_id = 1
        # The agreed cluster version as of applied_index: it only rises, and
        # only through the log (paxos/common/versions.py).
        self.cluster_version = versions.BASE_CLUSTER_VERSION
        # A plain dict, so that a freeze copies it in one C-level pass; the
        # eviction order lives apart, in ``_lru`` (least recently touched first).
        self._sessions: dict[SessionKey, _Session] = {}
        self._lru: OrderedDict[SessionKey, None] = OrderedDict()
        self._touch: tuple[int, int] = (0, 0)  # the command being applied
        self._generation = 0  # bumped by every freeze
        # Images: every stored hash maps to the ref of the iset that stored it
        # (refs grow in apply order, so the index breaks ties by recency).
        self._images = ImageIndex(limits.IMAGE_HASH_BYTES, chunk_bits=limits.IMAGE_INDEX_CHUNK_BITS)
        self._image_meta: dict[int, tuple[bytes, str]] = {}
        self._hashes_per_ref: dict[int, int] = {}
        self._next_ref = 1

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def apply(self, slot: Slot, value: Value) -> list[Applied]:
        """Apply one chosen slot; a result for every client write and registration it carried.

        A raise of the cluster version that moved it is reported too.  One
        above what this release runs raises ``ClusterVersionTooNew`` with the
        slot not applied.
        """
        if slot != self.applied_index + 1:
            raise RuntimeError(f"slot {slot} applied after {self.applied_index}; slots must apply in order")
        self._refuse_too_new(slot, value)
        self.applied_index = slot
        results = []
        for position, raw in enumerate(value):
            self._touch = (slot, position)
            result = self._apply_command(slot, raw)
            if result is not None:
                results.append(result)
        return results

    def _refuse_too_new(self, slot: Slot, value: Value) -> None:
        """Raise ``ClusterVersionTooNew`` before any of ``value`` applies if it raises beyond this release."""
        for raw in value:
            # Only a raise starts with its field's tag (a LogCommand holds one
            # field), so the other commands are not decoded twice.
            if not raw.startswith(_RAISE_TAG):
                continue
            command = log_pb2.LogCommand()
            try:
                command.ParseFromString(raw)
            except DecodeError:
                continue  # counted as unreadable when it applies
            if command.raise_cluster_version.version > versions.MAX_CLUSTER_VERSION:
                raise ClusterVersionTooNew(slot, command.raise_cluster_version.version)

    def image_matches(self, h: bytes, max_distance: int, limit: int) -> list[ImageMatch]:
        found = self._images.nearest(h, max_distance, limit)
        return [ImageMatch(self._image_meta[ref][0], dist, self._image_meta[ref][1]) for dist, _, ref in found]

    def session_table(self) -> list[tuple[SessionKey, int, list[Result]]]:
        """Every client session, least recently touched first: (session, first unacked, results by seq)."""
        return [
            (cid, self._sessions[cid].first_unacked, [r for _, r in sorted(self._sessions[cid].results.items())])
            for cid in self._lru
        ]

    def cached_result(self, session_key: SessionKey, seq: int) -> Result | None:
        session = self._sessions.get(session_key)
        return session.results.get(seq) if session else None

    def has_session(self, session_key: SessionKey) -> bool:
        return session_key in self._sessions

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def _apply_command(self, slot: Slot, raw: bytes) -> Applied | None:
        command = log_pb2.LogCommand()
        try:
            command.ParseFromString(raw)
        except DecodeError:
            self._unreadable(slot, "does not decode")
            return None
        match command.WhichOneof("kind"):
            case "client_write":
                return self._apply_write(command.client_write)
            case "register_session":
                return self._register(command.register_session)
            case "raise_cluster_version":
                return self._raise_version(slot, command.raise_cluster_version)
            case "configuration":
                try:
                    self.membership = configuration.from_proto(command.configuration)
                except ValueError as exc:
                    self._unreadable(slot, f"is a configuration that cannot be used ({exc})")
                return None
            case None:  # empty, or a kind added by a newer version of paxoskv
                self._unreadable(slot, "is of a kind this version does not know")
                return None
            case kind:
                raise AssertionError(f"log command kind {kind!r} has no apply rule")

    def _unreadable(self, slot: Slot, why: str) -> None:
        self.unreadable_commands += 1
        if self.unreadable_commands == 1:
            log.warning(
                "a command chosen in slot %d %s; it was skipped here as on every replica of this version "
                "(further ones are only counted)",
                slot,
                why,
            )

    def _register(self, register: log_pb2.RegisterSession) -> Registration:
        session_id = self.next_session_id
        self.next_session_id += 1
        self._open_session(session_id)
        return Registration(register.proposer, register.nonce, session_id)

    def _raise_version(self, slot: Slot, raised: log_pb2.RaiseClusterVersion) -> VersionRaised | None:
        # At or below the current version: a no-op (two leaders may each
        # have proposed one, or a leader retried).  The version never falls.
        if raised.version <= self.cluster_version:
            return None
        self.cluster_version = raised.version
        return VersionRaised(slot, raised.version, raised.proposer)

    def _apply_write(self, write: log_pb2.ClientWrite) -> Result:
        key = session_of(write)
        error = applicability_error(write)
        if error:
            # Changes nothing, so it needs no session and no cached result.
            return Result(key, write.seq, Outcome.REFUSED, error=error)
        if write.session_id or write.session_required:
            found = self._existing_session(key)
            if found is None:
                # Nothing to look a retry up in: applying it could apply it twice.
                return Result(key, write.seq, Outcome.EXPIRED, error=_expired_error(key))
            session = found
        else:
            # Only in logs from before sessions were registered: a client's
            # first write opened its session.
            session = self._existing_session(key) or self._open_session(key)
        cached = session.results.get(write.seq)
        if cached is not None:
            return cached
        if write.seq < session.first_unacked:
            # The client acknowledged a later first_unacked, so it had given
            # up on this seq; the result of an earlier copy, if one applied,
            # was dropped then.  Applying this copy might apply it twice.
            return Result(
                key,
                write.seq,
                Outcome.UNKNOWN,
                error=(
                    f"write {write.seq} arrived after this client moved on to {session.first_unacked}; "
                    "it was not applied now, and an earlier copy may or may not have been"
                ),
            )
        result = self._execute(write)
        self._remember(session, write, result)
        return result

    def _execute(self, write: log_pb2.ClientWrite) -> Result:
        match write.WhichOneof("op"):
            case "set":
                self.data[write.set.key] = write.set.value
                return Result(session_of(write), write.seq)
            case "delete":
                removed = self.data.pop(write.delete.key, None) is not None
                return Result(session_of(write), write.seq, removed=removed)
            case "iset":
                self._store_image(write.iset)
                return Result(session_of(write), write.seq)
            case kind:
                raise AssertionError(f"client write op {kind!r} passed applicability_error unapplied")

    def _store_image(self, op: log_pb2.ImageSetOp) -> None:
        ref = self._next_ref
        self._next_ref += 1
        self._image_meta[ref] = (op.hashes[0], op.metadata)
        for h in dict.fromkeys(op.hashes):  # distinct, in order
            previous = self._images.ref_of(h)
            self._images.add(h, ref)
            self._hashes_per_ref[ref] = self._hashes_per_ref.get(ref, 0) + 1
            if previous is not None:
                self._drop_hash_of(previous)

    def _drop_hash_of(self, ref: int) -> None:
        """A newer iset took over one of ``ref``'s hashes."""
        self._hashes_per_ref[ref] -= 1
        if self._hashes_per_ref[ref] == 0:
            del self._hashes_per_ref[ref]
            del self._image_meta[ref]

    def _open_session(self, key: SessionKey) -> _Session:
        assert key not in self._sessions, f"session {key!r} opened twice"
        session = self._sessions[key] = _Session(generation=self._generation, touched=self._touch)
        self._lru[key] = None
        if len(self._sessions) > limits.MAX_CLIENT_SESSIONS:
            evicted, _ = self._lru.popitem(last=False)
            del self._sessions[evicted]
        assert len(self._sessions) == len(self._lru) <= limits.MAX_CLIENT_SESSIONS
        return session

    def _existing_session(self, key: SessionKey) -> _Session | None:
        """The session ``key``, now the most recently used, or None if it is not kept."""
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.generation != self._generation:
            # A frozen copy shares this object: change a copy of it instead.
            session = _Session(session.first_unacked, session.results.copy(), self._generation)
            self._sessions[key] = session
        session.touched = self._touch
        self._lru.move_to_end(key)
        return session

    def _remember(self, session: _Session, write: log_pb2.ClientWrite, result: Result) -> None:
        session.results[write.seq] = result
        if write.first_unacked > session.first_unacked:
            session.first_unacked = write.first_unacked
            for seq in [s for s in session.results if s < write.first_unacked]:
                del session.results[seq]

    # ------------------------------------------------------------ snapshots

    def freeze(self) -> FrozenState:
        """A consistent copy of the state as of ``applied_index``, cheap to take.

        Only shallow copies are made here, in the apply loop: results are
        immutable and the strings are shared, so the copy costs one pass over
        the containers.  Encoding it (``FrozenState.parts``) is the slow part
        and may run on another thread while this store applies more slots.
        """
        self._generation += 1  # sessions shared with the copy are copied before they change
        return FrozenState(
            applied_index=self.applied_index,
            unreadable_commands=self.unreadable_commands,
            next_image_ref=self._next_ref,
            next_session_id=self.next_session_id,
            cluster_version=self.cluster_version,
            membership=self.membership,
            data=self.data.copy(),
            sessions=self._sessions.copy(),
            image_meta=self._image_meta.copy(),
            image_refs=self._images.refs_copy(),
        )

    @classmethod
    def restore(cls, header: snapshot_pb2.SnapshotHeader, parts: Iterable[snapshot_pb2.SnapshotPart]) -> StateMachine:
        """The state a snapshot holds; ``parts`` are its data parts, in order.

        Applying the same log after it gives the same state as applying the
        whole log: the sessions keep their eviction order and the images
        their refs.
        """
        sm = cls()
        if header.members:
            sm.membership = configuration.from_proto(
                log_pb2.Configuration(
                    members=[
                        log_pb2.ConfigMember(id=m.id, name=m.name, address=m.address, voter=not m.learner)
                        for m in header.members
                    ]
                )
            )
        sm.applied_index = header.applied_index
        sm.unreadable_commands = header.unreadable_commands
        sm._next_ref = header.next_image_ref
        sm.next_session_id = header.next_session_id or 1
        sm.cluster_version = header.cluster_version or versions.BASE_CLUSTER_VERSION
        if sm.cluster_version > versions.MAX_CLUSTER_VERSION:
            raise ClusterVersionTooNew(header.applied_index, sm.cluster_version)
        for part in parts:
            match part.WhichOneof("part"):
                case "key_values":
                    for kv in part.key_values.entries:
                        sm.data[kv.key] = kv.value
                case "sessions":
                    for s in part.sessions.sessions:
                        # A session a client named itself (a snapshot from
                        # before sessions were registered) keeps its name:
                        # a string, never equal to a registered number.
                        key: SessionKey = s.session_id or s.client_id
                        if s.session_id and (s.client_id or s.session_id >= sm.next_session_id):
                            raise ValueError(f"session {s.session_id} was never registered")
                        if not key or key in sm._sessions:
                            raise ValueError(f"session {key!r} is unnamed or listed twice")
                        # In the file's order (least recently touched first),
                        # stamped below any slot still to be applied.
                        sm._sessions[key] = _Session(
                            s.first_unacked,
                            {r.seq: _result_from_pb(key, r) for r in s.results},
                            touched=(header.applied_index, len(sm._lru)),
                        )
                        sm._lru[key] = None
                    if len(sm._sessions) > limits.MAX_CLIENT_SESSIONS:
                        raise ValueError(f"snapshot holds more than {limits.MAX_CLIENT_SESSIONS} client sessions")
                case "images":
                    for image in part.images.images:
                        sm._image_meta[image.ref] = (image.name_hash, image.metadata)
                        sm._hashes_per_ref[image.ref] = len(image.hashes)
                        for h in image.hashes:
                            sm._images.add(h, image.ref)
                case other:
                    raise ValueError(f"snapshot data part of kind {other!r} is not data")
        return sm


_OUTCOME_TO_PB = {
    Outcome.APPLIED: snapshot_pb2.APPLIED,
    Outcome.REFUSED: snapshot_pb2.REFUSED,
    Outcome.UNKNOWN: snapshot_pb2.UNKNOWN,
}
_OUTCOME_FROM_PB = {v: k for k, v in _OUTCOME_TO_PB.items()}


def _result_from_pb(key: SessionKey, r: snapshot_pb2.SessionResult) -> Result:
    outcome = _OUTCOME_FROM_PB.get(r.outcome)
    if outcome is None:
        raise ValueError(f"session result with unknown outcome {r.outcome}")
    return Result(key, r.seq, outcome, r.removed, r.error)


def _expired_error(key: SessionKey) -> str:
    return (
        f"session {key} has expired (the cluster keeps the {limits.MAX_CLIENT_SESSIONS} most recently used); "
        "this write was not applied now, an earlier copy may or may not have been; open a new session"
    )


@dataclass(frozen=True)
class FrozenState:
    """A state machine's contents at one applied index; see ``StateMachine.freeze``."""

    applied_index: Slot
    unreadable_commands: int
    next_image_ref: int
    next_session_id: int
    cluster_version: int
    membership: Membership | None
    data: dict[str, str]
    sessions: dict[SessionKey, _Session]  # none of them changes after the freeze
    image_meta: dict[int, tuple[bytes, str]]
    image_refs: dict[int, int]  # hash, as a big-endian integer -> ref

    def parts(self, frame_bytes: int = limits.SNAPSHOT_FRAME_TARGET_BYTES) -> Iterator[snapshot_pb2.SnapshotPart]:
        """The data parts of a snapshot, each about ``frame_bytes`` encoded (at least one entry)."""
        batch = snapshot_pb2.KeyValues()
        size = 0
        for key in sorted(self.data):
            value = self.data[key]
            batch.entries.add(key=key, value=value)
            size += len(key) + len(value) + 8
            if size >= frame_bytes:
                yield snapshot_pb2.SnapshotPart(key_values=batch)
                batch, size = snapshot_pb2.KeyValues(), 0
        if batch.entries:
            yield snapshot_pb2.SnapshotPart(key_values=batch)
        sessions = snapshot_pb2.ClientSessions()
        size = 0
        for session_key, session in sorted(self.sessions.items(), key=lambda item: item[1].touched):
            pb = sessions.sessions.add(first_unacked=session.first_unacked)
            if isinstance(session_key, int):
                pb.session_id = session_key
            else:
                pb.client_id = session_key
            for r in session.results.values():
                pb.results.add(seq=r.seq, outcome=_OUTCOME_TO_PB[r.outcome], removed=r.removed, error=r.error)
                size += len(r.error) + 16
            size += len(str(session_key)) + 16
            if size >= frame_bytes:
                yield snapshot_pb2.SnapshotPart(sessions=sessions)
                sessions, size = snapshot_pb2.ClientSessions(), 0
        if sessions.sessions:
            yield snapshot_pb2.SnapshotPart(sessions=sessions)
        hashes_of: dict[int, list[bytes]] = {}
        for number in sorted(self.image_refs):
            hashes_of.setdefault(self.image_refs[number], []).append(number.to_bytes(limits.IMAGE_HASH_BYTES, "big"))
        images = snapshot_pb2.StoredImages()
        size = 0
        for ref in sorted(self.image_meta):
            name_hash, metadata = self.image_meta[ref]
            images.images.add(ref=ref, name_hash=name_hash, metadata=metadata, hashes=hashes_of.get(ref, []))
            size += len(metadata) + 40 * (1 + len(hashes_of.get(ref, [])))
            if size >= frame_bytes:
                yield snapshot_pb2.SnapshotPart(images=images)
                images, size = snapshot_pb2.StoredImages(), 0
        if images.images:
            yield snapshot_pb2.SnapshotPart(images=images)
