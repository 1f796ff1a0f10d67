"""A replica's host stood in for: storage that keeps records in memory, a transport that sends nothing."""

from __future__ import annotations

from collections.abc import Callable

from paxos.consensus.messages import Message, NodeId, Record, Slot
from paxos.kv.statemachine import FrozenState
from paxos.replica import FetchedSnapshot


class MemoryStorage:
    """A storage that remembers what the book held when each record was made durable."""

    def __init__(self, book: dict[NodeId, int] | None = None) -> None:
        self.book = dict(book or {})
        self.appended: list[Record] = []
        self.seen_by_core_before_record: list[NodeId] = []

    def append(self, records: list[Record]) -> None:
        self.appended.extend(records)

    def unsynced(self) -> bool:
        return False

    def sync(self, done: Callable[[], None]) -> None:
        done()

    def log_bytes(self) -> int:
        return 0

    def save_snapshot(self, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        done(False)

    def compact(self, snapshot_index: Slot) -> None:
        pass

    def recorded_incarnations(self) -> dict[NodeId, int]:
        return dict(self.book)

    def record_incarnation(self, member: NodeId, incarnation: int) -> None:
        self.book[member] = incarnation


class NullTransport:
    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        pass

    def fetch_snapshot(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        done(None)
