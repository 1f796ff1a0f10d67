"""The paxoskv client library.

``KVClient`` finds the leader itself (following the redirects of followers),
retries through leader changes until its timeout, and tags each write with
its client id and a sequence number so that a retried write is applied at
most once.  It is safe to share between threads.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from client import images
from client.images import ImageSource
from paxos.hostfile import Member, parse_hostfile
from paxos.limits import (
    DEFAULT_MAX_VALUE_BYTES,
    MAX_IMAGE_MATCHES,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_METADATA_BYTES,
    SESSION_WINDOW,
)
from protos import kv_pb2, kv_pb2_grpc

# One attempt against one server; a stalled server costs at most this much
# before the client tries another.
ATTEMPT_SECONDS = 1.0
STATUS_SECONDS = 1.0
# Pause between rounds when no server knows a leader (an election is running).
NO_LEADER_BACKOFF = 0.05

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted server must be retried within a second, not after gRPC's
    # default reconnect backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Pause after a transport error, so a dead cluster is not hammered.
ERROR_BACKOFF = 0.02

T = TypeVar("T")


class KVError(Exception):
    """The operation failed and was not applied."""


class UnknownOutcome(KVError):
    """A write may or may not have been applied (the client lost track of it)."""


class Unavailable(KVError):
    """No server could complete the operation within the timeout."""


class InvalidRequest(KVError):
    """The request was refused as malformed; nothing was applied."""


class _Session:
    """Sequence numbers of one client session; guarded by the client's lock."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.next_seq = 1
        self.open: set[int] = set()

    def first_unacked(self, lock: threading.Lock) -> int:
        with lock:
            return min(self.open, default=self.next_seq)


class _Attempt:
    """What one call to a server came back with."""

    def __init__(self, status: int, hint: str, reply: object, error: str = "") -> None:
        self.status, self.hint, self.reply, self.error = status, hint, reply, error


class KVClient:
    def __init__(
        self,
        members: list[Member],
        timeout: float = 10.0,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        client_id: str | None = None,
    ) -> None:
        if not members:
            raise ValueError("a client needs at least one server address")
        self.members = members
        self._names = {m.name for m in members}
        self.timeout = timeout
        self.max_value_bytes = max_value_bytes
        self.client_id = client_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._session = _Session(self.client_id)
        self._leader: str | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, kv_pb2_grpc.KVStub] = {}

    @classmethod
    def from_hostfile(cls, path: str | Path, timeout: float = 10.0) -> KVClient:
        return cls(parse_hostfile(path), timeout=timeout)

    def __enter__(self) -> KVClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._stubs.clear()
        for channel in channels:
            channel.close()

    # ------------------------------------------------------------- the API

    def set(self, key: str, value: str) -> None:
        self._check_key(key)
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > self.max_value_bytes:
            raise InvalidRequest(f"value is {size} bytes; the limit is {self.max_value_bytes}")
        self._write(lambda cmd: cmd.set.CopyFrom(kv_pb2.SetOp(key=key, value=value)))

    def delete(self, key: str) -> bool:
        self._check_key(key)
        reply = self._write(lambda cmd: cmd.delete.CopyFrom(kv_pb2.DeleteOp(key=key)))
        return reply.removed

    def get(self, key: str, consistency: str = "linearizable") -> str | None:
        """The value of ``key``, or None.

        ``consistency="local"`` reads whichever server answers first, without
        asking the leader: fast, but the value may be stale.
        """
        self._check_key(key)
        level = _consistency(consistency)
        request = kv_pb2.GetRequest(key=key, consistency=level)

        def call(stub: kv_pb2_grpc.KVStub, timeout: float) -> _Attempt:
            reply = stub.Get(request, timeout=timeout)
            return _Attempt(reply.status, reply.leader_hint, reply, reply.error)

        reply = self._retry(call, is_write=False, any_server=level == kv_pb2.LOCAL)
        assert isinstance(reply, kv_pb2.GetReply)
        return reply.value if reply.found else None

    def iset(self, image: ImageSource, metadata: str) -> str:
        """Store ``metadata`` for a photo (a path or the file's bytes); returns its hash in hex.

        Raises ``ImageError`` (a ValueError) for a file that is missing, not
        an image, corrupt or too large, before anything is sent.
        """
        size = len(metadata.encode("utf-8", "surrogatepass"))
        if size > MAX_METADATA_BYTES:
            raise InvalidRequest(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
        hashes = images.index_hashes(image)
        self._write(lambda cmd: cmd.iset.CopyFrom(kv_pb2.ImageSetOp(hashes=hashes, metadata=metadata)))
        return images.hash_hex(hashes[0])

    def iget(
        self, image: ImageSource, max_distance: int | None = None, consistency: str = "linearizable"
    ) -> str | None:
        """The metadata of the stored photo nearest to ``image``, or None.

        Only photos within ``max_distance`` bits (default
        ``images.DEFAULT_MAX_DISTANCE``) count; ties go to the latest iset.
        """
        found = self.inearest(image, limit=1, max_distance=max_distance, consistency=consistency)
        return found[0].metadata if found else None

    def inearest(
        self,
        image: ImageSource,
        limit: int = 5,
        max_distance: int | None = None,
        consistency: str = "linearizable",
    ) -> list[ImageMatch]:
        """Up to ``limit`` stored photos nearest to ``image``, nearest first."""
        distance = images.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
        if not 0 <= distance <= images.HASH_BITS:
            raise InvalidRequest(f"max_distance must be 0 to {images.HASH_BITS} bits")
        if not 1 <= limit <= MAX_IMAGE_MATCHES:
            raise InvalidRequest(f"limit must be 1 to {MAX_IMAGE_MATCHES}")
        request = kv_pb2.ImageGetRequest(
            hash=images.hash_image(image), max_distance=distance, limit=limit, consistency=_consistency(consistency)
        )

        def call(stub: kv_pb2_grpc.KVStub, timeout: float) -> _Attempt:
            reply = stub.ImageGet(request, timeout=timeout)
            return _Attempt(reply.status, reply.leader_hint, reply, reply.error)

        reply = self._retry(call, is_write=False, any_server=request.consistency == kv_pb2.LOCAL)
        assert isinstance(reply, kv_pb2.ImageGetReply)
        return [ImageMatch(images.hash_hex(m.hash), m.distance, m.metadata) for m in reply.matches]

    def status(self) -> list[dict[str, object]]:
        """One entry per server in hostfile order; unreachable ones are 'down'."""
        results: list[dict[str, object]] = [{} for _ in self.members]

        def probe(index: int, member: Member) -> None:
            entry: dict[str, object] = {
                "name": member.name,
                "address": member.address,
                "reachable": False,
                "role": "down",
                "leader": "",
                "ballot": "",
                "commit_index": 0,
                "applied_index": 0,
            }
            try:
                s = self._stub(member).Status(kv_pb2.StatusRequest(), timeout=STATUS_SECONDS)
                entry.update(
                    reachable=True,
                    role=s.role,
                    leader=s.leader,
                    ballot=s.ballot,
                    commit_index=s.commit_index,
                    applied_index=s.applied_index,
                )
            except grpc.RpcError:
                pass
            results[index] = entry

        threads = [threading.Thread(target=probe, args=(i, m)) for i, m in enumerate(self.members)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    # ----------------------------------------------------------- machinery

    def _check_key(self, key: str) -> None:
        size = len(key.encode("utf-8", "surrogatepass"))
        if not 0 < size <= MAX_KEY_BYTES:
            raise InvalidRequest(f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size}")

    def _write(self, fill: Callable[[kv_pb2.Command], object]) -> kv_pb2.WriteReply:
        session, seq = self._open_seq()
        try:
            cmd = kv_pb2.Command(client_id=session.id, seq=seq, first_unacked=session.first_unacked(self._lock))
            fill(cmd)
            request = kv_pb2.WriteRequest(command=cmd)

            def call(stub: kv_pb2_grpc.KVStub, timeout: float) -> _Attempt:
                reply = stub.Write(request, timeout=timeout)
                return _Attempt(reply.status, reply.leader_hint, reply, reply.error)

            reply = self._retry(call, is_write=True)
            assert isinstance(reply, kv_pb2.WriteReply)
            return reply
        finally:
            with self._lock:
                session.open.discard(seq)

    def _open_seq(self) -> tuple[_Session, int]:
        """A sequence number for a new write, in a session whose window has room.

        The servers keep results for a session's writes from its oldest
        unacknowledged one up to SESSION_WINDOW above it.  When one slow write
        pins that window, later writes move to a fresh session rather than
        waiting for it.
        """
        with self._lock:
            session = self._session
            oldest = min(session.open, default=session.next_seq)
            if session.next_seq - oldest >= SESSION_WINDOW - 1:
                session = self._session = _Session(uuid.uuid4().hex)
            seq = session.next_seq
            session.next_seq += 1
            session.open.add(seq)
            return session, seq

    def _retry(
        self, call: Callable[[kv_pb2_grpc.KVStub, float], _Attempt], is_write: bool, any_server: bool = False
    ) -> object:
        deadline = time.monotonic() + self.timeout
        ambiguous = False
        tried: list[str] = []
        last_error = "no attempt made"
        redirects = 0
        rotation = itertools.cycle(self.members)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            member = self._target(rotation, any_server)
            if member.address not in tried:
                tried.append(member.address)
            try:
                attempt = call(self._stub(member), min(ATTEMPT_SECONDS, remaining))
            except grpc.RpcError as err:
                last_error = f"{member.address}: {_describe(err)}"
                if is_write and not _surely_not_delivered(err):
                    ambiguous = True
                self._forget_leader(member.name)
                time.sleep(min(ERROR_BACKOFF, max(deadline - time.monotonic(), 0)))
                continue
            if attempt.status == kv_pb2.OK:
                self._leader = member.name if not any_server else self._leader
                return attempt.reply
            if attempt.status == kv_pb2.INVALID:
                raise InvalidRequest(attempt.error or "request refused as invalid")
            if attempt.status == kv_pb2.UNKNOWN:
                ambiguous = True
            last_error = f"{member.address}: {kv_pb2.Status.Name(attempt.status).lower()} {attempt.error}".strip()
            redirects += 1
            useful_hint = attempt.hint in self._names and attempt.hint != member.name
            self._leader = attempt.hint if useful_hint else None
            # Pause when no server names a usable leader (an election is
            # running, or the leader is outside this client's hostfile), and
            # when redirects go round in circles on stale hints.
            if not useful_hint or redirects > len(self.members):
                time.sleep(min(NO_LEADER_BACKOFF, max(deadline - time.monotonic(), 0)))
        if ambiguous:
            raise UnknownOutcome(
                f"write outcome unknown after {self.timeout:g}s: it may or may not have been applied "
                f"(last error: {last_error})"
            )
        raise Unavailable(
            f"cluster unavailable after {self.timeout:g}s; tried {', '.join(tried)} (last error: {last_error})"
        )

    def _target(self, rotation: itertools.cycle[Member], any_server: bool) -> Member:
        if self._leader is not None and not any_server:
            for member in self.members:
                if member.name == self._leader:
                    return member
        return next(rotation)

    def _forget_leader(self, name: str) -> None:
        if self._leader == name:
            self._leader = None

    def _stub(self, member: Member) -> kv_pb2_grpc.KVStub:
        with self._lock:
            stub = self._stubs.get(member.address)
            if stub is None:
                channel = grpc.insecure_channel(member.address, options=_CHANNEL_OPTIONS)
                self._channels[member.address] = channel
                stub = self._stubs[member.address] = kv_pb2_grpc.KVStub(channel)
            return stub


@dataclass(frozen=True)
class ImageMatch:
    hash: str  # the stored photo's hash, hex
    distance: int  # bits
    metadata: str


def _consistency(name: str) -> kv_pb2.Consistency:
    if name not in ("linearizable", "local"):
        raise ValueError("consistency must be 'linearizable' or 'local'")
    return kv_pb2.LOCAL if name == "local" else kv_pb2.LINEARIZABLE


def _describe(err: grpc.RpcError) -> str:
    code = err.code() if isinstance(err, grpc.Call) else None
    details = err.details() if isinstance(err, grpc.Call) else str(err)
    name = code.name.lower() if code else "error"
    return f"{name} ({details})" if details else name


def _surely_not_delivered(err: grpc.RpcError) -> bool:
    """True when the request certainly never reached a server."""
    if not isinstance(err, grpc.Call) or err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (err.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details
