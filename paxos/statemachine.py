"""The replicated key-value state machine.

Every server applies the same chosen commands in slot order, so everything
here is deterministic: no clocks, no randomness, no iteration over unordered
sets.  Besides the keys it keeps, per client, the results of recent writes,
so a write retried after a timeout or a leader change is applied at most once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from paxos import limits
from paxos.image_index import ImageIndex
from paxos.messages import Slot, Value
from protos import kv_pb2


@dataclass(frozen=True, slots=True)
class Result:
    client_id: str
    seq: int
    ok: bool = True
    removed: bool = False
    error: str = ""


@dataclass
class _Session:
    first_unacked: int = 0
    results: dict[int, Result] = field(default_factory=dict)


def validate_key(key: str) -> str | None:
    """An error message for a bad key, or None."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size == 0:
        return "key must not be empty"
    if size > limits.MAX_KEY_BYTES:
        return f"key is {size} bytes; the limit is {limits.MAX_KEY_BYTES}"
    return None


def validate_command(cmd: kv_pb2.Command, max_value_bytes: int) -> str | None:
    """An error message when ``cmd`` must not be applied, or None."""
    if not cmd.client_id or len(cmd.client_id.encode()) > limits.MAX_CLIENT_ID_BYTES:
        return f"client id must be 1 to {limits.MAX_CLIENT_ID_BYTES} bytes"
    if not cmd.first_unacked <= cmd.seq < cmd.first_unacked + limits.SESSION_WINDOW:
        return f"sequence number {cmd.seq} is outside this client's window starting at {cmd.first_unacked}"
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


def validate_image_hash(h: bytes) -> str | None:
    if len(h) != limits.IMAGE_HASH_BYTES:
        return f"image hash is {len(h)} bytes; expected {limits.IMAGE_HASH_BYTES}"
    return None


def validate_image_set(op: kv_pb2.ImageSetOp) -> str | None:
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


class StateMachine:
    def __init__(self, max_value_bytes: int = limits.DEFAULT_MAX_VALUE_BYTES) -> None:
        self.max_value_bytes = max_value_bytes
        self.data: dict[str, str] = {}
        self.applied_index: Slot = 0
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        # Images: every stored hash maps to the ref of the iset that stored it
        # (refs grow in apply order, so the index breaks ties by recency).
        self._images = ImageIndex(limits.IMAGE_HASH_BYTES, chunk_bits=limits.IMAGE_INDEX_CHUNK_BITS)
        self._image_meta: dict[int, tuple[bytes, str]] = {}
        self._hashes_per_ref: dict[int, int] = {}
        self._next_ref = 1

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def apply(self, slot: Slot, value: Value) -> list[Result]:
        """Apply one chosen slot; results for the commands it carried."""
        if slot != self.applied_index + 1:
            raise RuntimeError(f"slot {slot} applied after {self.applied_index}; slots must apply in order")
        self.applied_index = slot
        results = []
        for raw in value:
            result = self._apply_command(raw)
            if result is not None:
                results.append(result)
        return results

    def image_matches(self, h: bytes, max_distance: int, limit: int) -> list[ImageMatch]:
        found = self._images.nearest(h, max_distance, limit)
        return [ImageMatch(self._image_meta[ref][0], dist, self._image_meta[ref][1]) for dist, _, ref in found]

    def cached_result(self, client_id: str, seq: int) -> Result | None:
        session = self._sessions.get(client_id)
        return session.results.get(seq) if session else None

    def _apply_command(self, raw: bytes) -> Result | None:
        cmd = kv_pb2.Command()
        try:
            cmd.ParseFromString(raw)
        except DecodeError:
            return None  # the leader validates before proposing; never expected
        error = validate_command(cmd, self.max_value_bytes)
        if error:
            # Changes nothing, so it needs no session and no cached result.
            return Result(cmd.client_id, cmd.seq, ok=False, error=error)
        session = self._session(cmd.client_id)
        if cmd.seq < session.first_unacked:
            return None  # the client already moved on from this write
        cached = session.results.get(cmd.seq)
        if cached is not None:
            return cached
        result = self._execute(cmd)
        self._remember(session, cmd, result)
        return result

    def _execute(self, cmd: kv_pb2.Command) -> Result:
        kind = cmd.WhichOneof("op")
        if kind == "set":
            self.data[cmd.set.key] = cmd.set.value
            return Result(cmd.client_id, cmd.seq)
        if kind == "delete":
            removed = self.data.pop(cmd.delete.key, None) is not None
            return Result(cmd.client_id, cmd.seq, removed=removed)
        self._store_image(cmd.iset)
        return Result(cmd.client_id, cmd.seq)

    def _store_image(self, op: kv_pb2.ImageSetOp) -> None:
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

    def _session(self, client_id: str) -> _Session:
        session = self._sessions.get(client_id)
        if session is None:
            session = self._sessions[client_id] = _Session()
            if len(self._sessions) > limits.MAX_CLIENT_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(client_id)
        return session

    def _remember(self, session: _Session, cmd: kv_pb2.Command, result: Result) -> None:
        session.results[cmd.seq] = result
        if cmd.first_unacked > session.first_unacked:
            session.first_unacked = cmd.first_unacked
            for seq in [s for s in session.results if s < cmd.first_unacked]:
                del session.results[seq]
