"""The paxoskv client library.

``KVClient`` finds the leader itself (following the redirects of followers),
retries through leader changes until its timeout, and tags each write with
its client id and a sequence number so that a retried write is applied at
most once.  It is safe to share between threads.  Where to send each attempt,
how long to wait and when to give up is decided by ``client.retry``; this
module makes the calls, reads the clock and sleeps.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

import grpc

from client.retry import (
    SECONDS,
    InvalidRequest,
    KnownLeader,
    KVError,
    Outcome,
    Retry,
    Unavailable,
    UnknownOutcome,
    outcome_of_status,
)
from paxos.hostfile import Member, parse_hostfile
from paxos.limits import (
    DEFAULT_MAX_VALUE_BYTES,
    MAX_IMAGE_MATCHES,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_METADATA_BYTES,
    SESSION_WINDOW,
)
from paxos.tlsfiles import client_credentials, find_tls_dir
from protos import kv_pb2, kv_pb2_grpc

if TYPE_CHECKING:
    # client.images pulls in numpy, scipy and imagehash (a third of a second): only iset and
    # inearest import it, so that every other command starts quickly.
    from client.images import ImageSource

__all__ = ["ImageMatch", "InvalidRequest", "KVClient", "KVError", "Unavailable", "UnknownOutcome"]

STATUS_SECONDS = 1.0

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted server must be retried within a second, not after gRPC's
    # default reconnect backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class _Session:
    """Sequence numbers of one client session; guarded by the client's lock."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.next_seq = 1
        self.open: set[int] = set()

    def first_unacked(self, lock: threading.Lock) -> int:
        with lock:
            return min(self.open, default=self.next_seq)


class _Reply(Protocol):
    """The fields every reply to a client request has."""

    status: int
    leader_hint: str
    error: str


R = TypeVar("R", bound=_Reply)


class KVClient:
    def __init__(
        self,
        members: list[Member],
        timeout: float = 10.0,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        client_id: str | None = None,
        tls_dir: str | Path | None = None,
    ) -> None:
        if not members:
            raise ValueError("a client needs at least one server address")
        self.members = members
        self._by_name = {m.name: m for m in members}
        self.timeout = timeout
        self.max_value_bytes = max_value_bytes
        self.client_id = client_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._session = _Session(self.client_id)
        self._leader: KnownLeader[Member] = KnownLeader()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, kv_pb2_grpc.KVStub] = {}
        # With a TLS directory: its ca.pem and client.pem (TlsError now if they cannot be read).
        self.tls_dir = tls_dir
        self._credentials = client_credentials(tls_dir) if tls_dir is not None else None

    @classmethod
    def from_hostfile(cls, path: str | Path, timeout: float = 10.0, tls_dir: str | Path | None = None) -> KVClient:
        """A client of the servers in ``path``; TLS with ``tls_dir``, else $PAXOSKV_TLS_DIR, else a
        ``tls`` directory beside the hostfile when there is one (python -m paxos.local makes one), else plaintext."""
        return cls(parse_hostfile(path), timeout=timeout, tls_dir=find_tls_dir(path, tls_dir))

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
        _check_text("value", value)
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

        def call(stub: kv_pb2_grpc.KVStub, timeout: float) -> kv_pb2.GetReply:
            return stub.Get(request, timeout=timeout)

        reply = self._retry(call, is_write=False, any_server=level == kv_pb2.LOCAL)
        return reply.value if reply.found else None

    def iset(self, image: ImageSource, metadata: str) -> str:
        """Store ``metadata`` for a photo (a path or the file's bytes); returns its hash in hex.

        Raises ``ImageError`` (a ValueError) for a file that is missing, not
        an image, corrupt or too large, before anything is sent.
        """
        from client import images

        _check_text("metadata", metadata)
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
        from client import images

        distance = images.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
        found = self.inearest(image, limit=1, max_distance=distance, consistency=consistency)
        return found[0].metadata if found else None

    def inearest(
        self,
        image: ImageSource,
        limit: int = 5,
        max_distance: int | None = None,
        consistency: str = "linearizable",
    ) -> list[ImageMatch]:
        """Up to ``limit`` stored photos nearest to ``image``, nearest first.

        Only photos within ``max_distance`` bits count; by default every
        stored photo does, however far (a ranking, as ``iget --nearest N`` on
        the command line), where ``iget`` keeps only a likely match.
        """
        from client import images

        distance = images.HASH_BITS if max_distance is None else max_distance
        if not 0 <= distance <= images.HASH_BITS:
            raise InvalidRequest(f"max_distance must be 0 to {images.HASH_BITS} bits")
        if not 1 <= limit <= MAX_IMAGE_MATCHES:
            raise InvalidRequest(f"limit must be 1 to {MAX_IMAGE_MATCHES}")
        request = kv_pb2.ImageGetRequest(
            hash=images.hash_image(image), max_distance=distance, limit=limit, consistency=_consistency(consistency)
        )

        def call(stub: kv_pb2_grpc.KVStub, timeout: float) -> kv_pb2.ImageGetReply:
            return stub.ImageGet(request, timeout=timeout)

        reply = self._retry(call, is_write=False, any_server=request.consistency == kv_pb2.LOCAL)
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
                    version=s.version,
                    uptime_seconds=round(s.uptime_seconds, 3),
                    log_bytes=s.log_bytes,
                    data_bytes=s.data_bytes,
                    last_fsync_seconds=s.last_fsync_seconds,
                )
            except grpc.RpcError as err:
                entry["error"] = _describe(err)  # not shown by status; says why, e.g. a TLS mismatch
            results[index] = entry

        threads = [threading.Thread(target=probe, args=(i, m)) for i, m in enumerate(self.members)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    # ----------------------------------------------------------- machinery

    def _check_key(self, key: str) -> None:
        _check_text("key", key)
        size = len(key.encode("utf-8", "surrogatepass"))
        if not 0 < size <= MAX_KEY_BYTES:
            raise InvalidRequest(f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size}")

    def _write(self, fill: Callable[[kv_pb2.Command], object]) -> kv_pb2.WriteReply:
        session, seq = self._open_seq()
        try:
            cmd = kv_pb2.Command(client_id=session.id, seq=seq, first_unacked=session.first_unacked(self._lock))
            fill(cmd)
            request = kv_pb2.WriteRequest(command=cmd)

            def call(stub: kv_pb2_grpc.KVStub, timeout: float) -> kv_pb2.WriteReply:
                return stub.Write(request, timeout=timeout)

            return self._retry(call, is_write=True)
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

    def _retry(self, call: Callable[[kv_pb2_grpc.KVStub, float], R], is_write: bool, any_server: bool = False) -> R:
        """Run ``call`` against the servers as ``client.retry`` decides, until it succeeds or time is up."""
        retry = Retry(
            self.members,
            self._leader,
            time.monotonic(),
            self.timeout,
            SECONDS,
            write=is_write,
            any_server=any_server,
            describe=_address,
        )
        while (attempt := retry.next_attempt(time.monotonic())) is not None:
            result: R | grpc.RpcError
            try:
                result = call(self._stub(attempt.server), attempt.timeout)
            except grpc.RpcError as err:
                result = err
            outcome, hint, error = classify(result)
            pause = retry.record(outcome, time.monotonic(), self._by_name.get(hint), error)
            if outcome is Outcome.OK:
                assert not isinstance(result, grpc.RpcError)
                return result
            time.sleep(pause)
        raise retry.give_up()

    def _stub(self, member: Member) -> kv_pb2_grpc.KVStub:
        with self._lock:
            stub = self._stubs.get(member.address)
            if stub is None:
                if self._credentials is None:
                    channel = grpc.insecure_channel(member.address, options=_CHANNEL_OPTIONS)
                else:
                    channel = grpc.secure_channel(member.address, self._credentials, options=_CHANNEL_OPTIONS)
                self._channels[member.address] = channel
                stub = self._stubs[member.address] = kv_pb2_grpc.KVStub(channel)
            return stub


@dataclass(frozen=True)
class ImageMatch:
    hash: str  # the stored photo's hash, hex
    distance: int  # bits
    metadata: str


def _check_text(what: str, text: object) -> None:
    """Keys, values and metadata are text: anything else is the caller's mistake, a TypeError."""
    if not isinstance(text, str):
        hint = "; decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, bytes | bytearray) else ""
        raise TypeError(f"{what} must be str, not {type(text).__name__}{hint}")


def _consistency(name: str) -> kv_pb2.Consistency:
    if name not in ("linearizable", "local"):
        raise ValueError("consistency must be 'linearizable' or 'local'")
    return kv_pb2.LOCAL if name == "local" else kv_pb2.LINEARIZABLE


def _describe(err: grpc.RpcError) -> str:
    """One line for a failed call, from the threaded or the asyncio gRPC API."""
    call = isinstance(err, grpc.Call | grpc.aio.AioRpcError)
    code = err.code() if call else None
    details = err.details() if call else str(err)
    name = code.name.lower() if code else "error"
    return f"{name} ({details})" if details else name


def classify(result: _Reply | grpc.RpcError) -> tuple[Outcome, str, str]:
    """What a call came back with: its outcome, the leader it names ('' for none) and the error.

    The one place where gRPC results become ``client.retry`` outcomes, for
    the library and the load generator alike.  Of the transport errors only
    a refused connection and a name that does not resolve surely never
    reached a server; after any other a write may have been applied.
    """
    if isinstance(result, grpc.RpcError):
        delivery = Outcome.NOT_DELIVERED if _surely_not_delivered(result) else Outcome.MAYBE_DELIVERED
        return delivery, "", _describe(result)
    return outcome_of_status(result.status), result.leader_hint, result.error


# gRPC's words (lower case) for an UNAVAILABLE call that never had a connection:
# one refused, or a name that did not resolve (a stopped Docker container's
# name, a typo in the hostfile), in the wordings of the gRPC versions we allow.
_NEVER_CONNECTED = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "errors resolving",
    "name resolution failed",
    "domain name not found",
)


def _surely_not_delivered(err: grpc.RpcError) -> bool:
    """True when the request certainly never reached a server."""
    if not isinstance(err, grpc.Call | grpc.aio.AioRpcError) or err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (err.details() or "").lower()
    return any(words in details for words in _NEVER_CONNECTED)


def _address(member: Member) -> str:
    return member.address
