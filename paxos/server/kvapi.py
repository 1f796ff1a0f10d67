"""The client API's answers, shared by the unary calls and the session streams.

``KvApi`` hands a request to the replica, waits for its answer until the
request's deadline, and builds the reply: writes, registrations,
linearizable reads, the status, the member list, membership changes and
backups.  It reads no gRPC call: the servicers (paxos/server/services.py)
and the session streams (paxos/server/session.py) take requests off the
wire, check their bounds, and pass the deadline on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from paxos.common import limits
from paxos.consensus.membership import ConfigMember
from paxos.consensus.messages import NodeId, Slot
from paxos.kv import logcommand
from paxos.kv.statemachine import StateMachine, validate_image_hash, validate_key
from paxos.replica import RegisterAnswer, Replica, Status, WriteAnswer
from paxos.server.addressbook import AddressBook
from paxos.server.endpoint import VERSION
from paxos.server.memberchange import membership_after
from paxos.server.refusals import RefusalLog
from paxos.server.standing import Standing
from paxos.server.stats import Histogram, ServerStats
from paxos.server.storage import WalStorage
from paxos.storage import snapshot as snapshots
from paxos.storage.meta import DATA_FORMAT
from protos import kv_pb2

log = logging.getLogger("paxos.server")

# How long a request may wait in the server when its client named no time.
DEFAULT_REQUEST_SECONDS = 10.0

T = TypeVar("T")
# Why the server at a new member's address may not be added, or None: asked
# of that server before a change that adds it is proposed (paxos/server/join.py).
JoinerCheck = Callable[[kv_pb2.MemberInfo, float], Awaitable[str | None]]


class KvApi:
    """What a client may ask this server, answered from the replica (see the module docstring)."""

    def __init__(
        self,
        replica: Replica,
        book: AddressBook,
        standing: Standing,
        stats: ServerStats,
        storage: WalStorage,
        client_refusals: RefusalLog,
        joiner_refusal: JoinerCheck,
    ) -> None:
        self.replica = replica
        self.client_refusals = client_refusals
        self._book = book
        self._standing = standing
        self._stats = stats
        self._storage = storage
        self._joiner_refusal = joiner_refusal

    @property
    def store(self) -> StateMachine:
        return self.replica.store

    @property
    def session_batch_requests(self) -> Histogram:
        return self._stats.session_batch_requests

    def note_request(self, method: str, status: str, seconds: float) -> None:
        self._stats.note_request(method, status, seconds)

    def leader_hint(self) -> str:
        return self._book.hint(self.replica.core.leader)

    def membership_state(self) -> str:
        return self._standing.state(self.replica.core.membership)

    # ------------------------------------------------------------ the log

    async def write(self, cmd: kv_pb2.Command, deadline: float) -> kv_pb2.WriteReply:
        future: asyncio.Future[WriteAnswer] = asyncio.get_running_loop().create_future()
        self.replica.write(logcommand.from_client(cmd), lambda answer: _settle(future, answer))
        try:
            answer = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            answer = WriteAnswer(Status.UNKNOWN)
        return write_reply(self, answer)

    async def register(self, deadline: float) -> kv_pb2.RegisterReply:
        future: asyncio.Future[RegisterAnswer] = asyncio.get_running_loop().create_future()
        nonce = self.replica.register(lambda answer: _settle(future, answer))
        try:
            answer = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            if nonce is not None:
                self.replica.forget_registration(nonce)
            answer = RegisterAnswer(Status.UNAVAILABLE, error="the registration did not apply in time; retry")
        return register_reply(self, answer)

    async def linearizable_read(self, deadline: float) -> kv_pb2.Status:
        """Wait until a read may be served here; the status to reply with."""
        future: asyncio.Future[kv_pb2.Status] = asyncio.get_running_loop().create_future()
        read_id = self.replica.read(lambda status: _settle(future, wire_status(status)))
        try:
            return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            if read_id is not None:
                self.replica.forget_read(read_id)
            return kv_pb2.UNAVAILABLE

    # ------------------------------------------------------------ this server

    def status(self) -> kv_pb2.NodeStatus:
        core, standing, storage = self.replica.core, self._standing, self._storage
        return kv_pb2.NodeStatus(
            name=standing.me.name,
            address=standing.me.address,
            role=core.role.value,
            leader=self.leader_hint(),
            ballot=str(core.ballot),
            commit_index=core.commit_index,
            applied_index=self.store.applied_index,
            version=VERSION,
            uptime_seconds=time.monotonic() - self._stats.started,
            log_bytes=storage.log_bytes(),
            data_bytes=_bytes_in(p for p in standing.data_dir.rglob("*") if p.is_file()),
            last_fsync_seconds=storage.last_fsync_seconds,
            snapshot_index=self.replica.snapshot_index,
            membership=self.membership_state(),
            member_id=standing.node_id,
            cluster_id=standing.cluster_id,
            cluster_version=self.store.cluster_version,
            max_cluster_version=self.replica.max_cluster_version,
            data_format=DATA_FORMAT,
        )

    # ------------------------------------------------------------ the members

    def members_reply(self) -> kv_pb2.MembersReply:
        core = self.replica.core
        leading = core.is_leader()
        progress = core.member_progress() if leading else {}
        reply = kv_pb2.MembersReply(
            status=kv_pb2.OK,
            leader_hint=self.leader_hint(),
            cluster_id=self._standing.cluster_id,
            commit_index=core.commit_index,
            change_in_progress=core.change_in_progress,
        )
        reply.members.extend(
            sorted(
                (self._member_info(cm, core.leader, progress) for cm in core.membership.members),
                key=lambda info: info.name,
            )
        )
        return reply

    def _member_info(self, cm: ConfigMember, leader: NodeId | None, progress: dict[NodeId, Slot]) -> kv_pb2.MemberInfo:
        applied = self.store.applied_index if cm.id == self._standing.node_id else progress.get(cm.id, 0)
        known = self._book.members.get(cm.id)
        address = cm.address or (known.address if known else "")
        return kv_pb2.MemberInfo(
            name=cm.name, address=address, voter=cm.voter, leader=cm.id == leader, applied_index=applied, id=cm.id
        )

    async def change_members(self, request: kv_pb2.ChangeMembersRequest, deadline: float) -> kv_pb2.ChangeMembersReply:
        core = self.replica.core
        if not core.is_leader():
            return kv_pb2.ChangeMembersReply(status=kv_pb2.NOT_LEADER, leader_hint=self.leader_hint())
        wanted, error = membership_after(core.membership, request)
        if wanted is not None and request.WhichOneof("change") == "add":
            refusal = await self._joiner_refusal(request.add, deadline)
            if refusal is not None:
                return kv_pb2.ChangeMembersReply(status=kv_pb2.INVALID, error=refusal)
            if not core.is_leader():
                return kv_pb2.ChangeMembersReply(status=kv_pb2.NOT_LEADER, leader_hint=self.leader_hint())
            wanted, error = membership_after(core.membership, request)  # it may have changed meanwhile
        if wanted is None:
            return kv_pb2.ChangeMembersReply(status=kv_pb2.INVALID, error=error)
        future: asyncio.Future[tuple[bool, str | None]] = asyncio.get_running_loop().create_future()
        immediate = True

        def answered(why: str | None) -> None:
            _settle(future, (immediate, why))

        self.replica.change_membership(wanted, answered)
        immediate = False
        try:
            refused_at_once, why = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            return kv_pb2.ChangeMembersReply(
                status=kv_pb2.UNAVAILABLE,
                error="the change was not chosen before the deadline; it may still be made: look again",
            )
        if why is not None:
            status = kv_pb2.INVALID if refused_at_once else kv_pb2.UNAVAILABLE
            return kv_pb2.ChangeMembersReply(status=status, error=why, leader_hint=self.leader_hint())
        log.info("membership change made: %s", wanted.describe())
        reply = kv_pb2.ChangeMembersReply(status=kv_pb2.OK)
        reply.members.extend(self._member_info(cm, None, {}) for cm in wanted.members)
        return reply

    # ------------------------------------------------------------ backups

    async def backup(self, deadline: float) -> AsyncIterator[kv_pb2.BackupChunk]:
        """A backup of this server's state at a linearizable point, as BackupChunk messages."""
        status = await self.linearizable_read(deadline)
        if status != kv_pb2.OK:
            yield kv_pb2.BackupChunk(status=status, leader_hint=self.leader_hint())
            return
        # No await since the read was confirmed: the state frozen now holds every
        # write acknowledged before the request came, so the backup is linearizable.
        frozen = self.store.freeze()
        header = snapshots.header_for(frozen, self._standing.cluster_id, self._book.snapshot_members())
        frames = snapshots.encode_frames(header, frozen.parts())
        estimate = self._storage.last_snapshot_bytes or len(frozen.data) * 64
        yield kv_pb2.BackupChunk(status=kv_pb2.OK, applied_index=frozen.applied_index, estimated_bytes=estimate)
        loop = asyncio.get_running_loop()
        while True:
            # Encoding runs on a thread, a chunk at a time, so memory stays bounded.
            data = await loop.run_in_executor(None, _next_chunk, frames)
            if not data:
                return
            yield kv_pb2.BackupChunk(data=data)


# ------------------------------------------- shared with the session streams


def get_error(request: kv_pb2.GetRequest) -> str | None:
    return validate_key(request.key)


def image_get_error(request: kv_pb2.ImageGetRequest) -> str | None:
    error = validate_image_hash(request.hash)
    if error is None and request.max_distance > limits.IMAGE_HASH_BYTES * 8:
        error = f"max_distance must be at most {limits.IMAGE_HASH_BYTES * 8} bits"
    if error is None and request.limit > limits.MAX_IMAGE_MATCHES:
        error = f"limit must be at most {limits.MAX_IMAGE_MATCHES}"
    return error


def serve_get(api: KvApi, request: kv_pb2.GetRequest) -> kv_pb2.GetReply:
    """Answer a checked get from this server's state, now."""
    value = api.store.get(request.key)
    return kv_pb2.GetReply(status=kv_pb2.OK, found=value is not None, value=value or "")


def serve_image_get(api: KvApi, request: kv_pb2.ImageGetRequest) -> kv_pb2.ImageGetReply:
    """Answer a checked image get from this server's state, now."""
    found = api.store.image_matches(request.hash, request.max_distance, max(request.limit, 1))
    matches = [kv_pb2.ImageMatch(hash=m.hash, distance=m.distance, metadata=m.metadata) for m in found]
    return kv_pb2.ImageGetReply(status=kv_pb2.OK, matches=matches)


# The replica's answers in the client API's words.  Every status has its
# own: a missing one fails at import, not on the first request that needs it.
_WIRE_STATUS: dict[Status, kv_pb2.Status] = {
    Status.OK: kv_pb2.OK,
    Status.NOT_LEADER: kv_pb2.NOT_LEADER,
    Status.UNKNOWN: kv_pb2.UNKNOWN,
    Status.INVALID: kv_pb2.INVALID,
    Status.UNAVAILABLE: kv_pb2.UNAVAILABLE,
    Status.SESSION_EXPIRED: kv_pb2.SESSION_EXPIRED,
}
assert set(_WIRE_STATUS) == set(Status), "a replica status has no client API status"


def wire_status(status: Status) -> kv_pb2.Status:
    """The client API's status for a replica's answer."""
    return _WIRE_STATUS[status]


def write_hints_leader(status: Status) -> bool:
    """Whether a write's reply names the leader: the client may retry there (or ask there what became of it)."""
    return status in (Status.NOT_LEADER, Status.UNKNOWN)


def register_reply(api: KvApi, answer: RegisterAnswer) -> kv_pb2.RegisterReply:
    hint = api.leader_hint() if answer.status is Status.NOT_LEADER else ""
    return kv_pb2.RegisterReply(
        status=wire_status(answer.status), session_id=answer.session_id, error=answer.error, leader_hint=hint
    )


def write_reply(api: KvApi, answer: WriteAnswer) -> kv_pb2.WriteReply:
    hint = api.leader_hint() if write_hints_leader(answer.status) else ""
    return kv_pb2.WriteReply(
        status=wire_status(answer.status), removed=answer.removed, error=answer.error, leader_hint=hint
    )


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # the caller may have timed out already
        future.set_result(value)


def _bytes_in(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:  # a log segment removed meanwhile
            pass
    return total


def _next_chunk(frames: Iterator[bytes]) -> bytes:
    parts: list[bytes] = []
    size = 0
    for frame in frames:
        parts.append(frame)
        size += len(frame)
        if size >= limits.SNAPSHOT_CHUNK_BYTES:
            break
    return b"".join(parts)
