"""The learner's part of the consensus core: what is chosen, the commit index, catch-up from a peer.

A section of ``Node`` (paxos/consensus/core.py) kept in a file of its own:
``Node`` inherits it, and the attributes declared here are ``Node``'s,
set in its ``__init__``.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING

from paxos.consensus.membership import Membership
from paxos.consensus.messages import (
    Ballot,
    CatchupReply,
    CatchupRequest,
    ChosenRecord,
    CommitRecord,
    DurableState,
    Message,
    NodeId,
    Ready,
    Slot,
    Value,
)
from paxos.consensus.quorum import MajorityConfig
from paxos.consensus.state import Config, LeaderState, RecoveryError


class Learner:
    """``Node``'s learner role (see the module docstring)."""

    id: NodeId
    config: Config
    now: int
    membership: Membership
    membership_ids: frozenset[NodeId]
    voters: MajorityConfig
    accepted: dict[Slot, tuple[Ballot, Value]]
    chosen: dict[Slot, Value]
    compacted: Slot
    commit_index: Slot
    refused: Counter[str]
    _emitted_index: Slot
    _out: Ready
    _lead: LeaderState | None
    _membership_changed: bool
    _removed_peers: set[NodeId]
    _snapshot_from: NodeId | None
    _leader_commit_hint: Slot
    _catchup_from: NodeId | None
    _catchup_sent_at: int | None
    _catchup_asked: tuple[NodeId, Slot] | None
    _catchup_asked_before: deque[tuple[NodeId, Slot]]

    if TYPE_CHECKING:

        def _send(self, to: NodeId, msg: Message) -> None: ...

        def _set_membership(self, membership: Membership) -> None: ...

    def _learn(self, slot: Slot, value: Value) -> None:
        if slot <= self.commit_index or slot in self.chosen:
            return
        self.chosen[slot] = value
        start = self.commit_index
        while self.commit_index + 1 in self.chosen:
            self.commit_index += 1
            self.accepted.pop(self.commit_index, None)
            chosen_config = self.config.configurations.decode(self.chosen[self.commit_index])
            if chosen_config is not None:
                self._removed_peers |= self.membership_ids - chosen_config.ids - {self.id}
                self._set_membership(chosen_config)
                self._membership_changed = True
            if self._lead is not None:
                # Learned some other way (a promise's commit index, catch-up):
                # nothing left to ask, and every accept this leader sends
                # stays above the commit index it carries.
                self._lead.in_flight.pop(self.commit_index, None)
        if self.commit_index > start:
            self._out.persist.append(CommitRecord(self.commit_index))

    def _learn_commit(self, leader: NodeId, ballot: Ballot, commit_index: Slot) -> None:
        """The leader of ``ballot`` says every slot up to commit_index is chosen.

        A slot we accepted in that same ballot holds the leader's value, which
        is the chosen one; any other slot must come from catch-up.
        """
        for slot in range(self.commit_index + 1, commit_index + 1):
            entry = self.accepted.get(slot)
            if entry is None or entry[0] != ballot:
                break
            self._learn(slot, entry[1])
        self._note_leader_commit(leader, commit_index)

    def _note_leader_commit(self, source: NodeId, commit_index: Slot) -> None:
        if commit_index > self._leader_commit_hint:
            self._leader_commit_hint = commit_index
        if commit_index > self.commit_index:
            self._catchup_from = source
            self._maybe_catch_up()

    def _maybe_catch_up(self) -> None:
        if self._catchup_from is None or self.commit_index >= self._leader_commit_hint:
            return
        if self._snapshot_from is not None:
            return  # the host is fetching a snapshot; the log follows it
        sent = self._catchup_sent_at
        if sent is not None and self.now - sent < self.config.retransmit_ticks:
            return
        self._catchup_sent_at = self.now
        if self._catchup_asked is not None:
            self._catchup_asked_before.append(self._catchup_asked)
        self._catchup_asked = (self._catchup_from, self.commit_index + 1)
        self._send(self._catchup_from, CatchupRequest(self.id, self.commit_index + 1))

    def _on_catchup_request(self, msg: CatchupRequest) -> None:
        if msg.from_slot <= self.compacted:
            # Forgotten here: the asker needs a snapshot first.
            self._send(msg.sender, CatchupReply(self.id, msg.from_slot, (), self.commit_index, self.compacted))
            return
        values: list[Value] = []
        size = 0
        slot = msg.from_slot
        while slot <= self.commit_index and len(values) < self.config.max_catchup_entries:
            value = self.chosen[slot]
            size += sum(len(c) for c in value)
            if values and size > self.config.max_catchup_bytes:
                break
            values.append(value)
            slot += 1
        self._send(msg.sender, CatchupReply(self.id, msg.from_slot, tuple(values), self.commit_index))

    def _on_catchup_reply(self, msg: CatchupReply) -> str | None:
        # Chosen values are taken on trust from the peer asked, so only the
        # answer to the one outstanding request is accepted.
        asked = (msg.sender, msg.first_slot)
        if asked != self._catchup_asked:
            if asked in self._catchup_asked_before:
                return None  # a late or duplicate answer: what it says is known or asked again
            return self._refuse("unsolicited catch-up reply")
        if len(msg.values) > self.config.max_catchup_entries:
            return self._refuse("catch-up reply longer than asked")
        if msg.values and msg.first_slot + len(msg.values) - 1 > msg.commit_index:
            return self._refuse("catch-up reply beyond its own commit index")
        if msg.compacted:
            if msg.values:
                return self._refuse("catch-up reply with values and a compacted log")
            if msg.compacted < msg.first_slot or msg.compacted > msg.commit_index:
                return self._refuse("catch-up reply compacted outside what was asked")
        self._catchup_asked = None
        self._catchup_asked_before.append(asked)
        self._catchup_sent_at = None
        if msg.compacted:
            self._snapshot_from = msg.sender
            self._out.snapshot_wanted = msg.sender
            self._note_leader_commit(msg.sender, msg.commit_index)
            return None
        for offset, value in enumerate(msg.values):
            slot = msg.first_slot + offset
            if slot > self.commit_index and slot not in self.chosen:
                self._out.persist.append(ChosenRecord(slot, value))
                self._learn(slot, value)
        self._note_leader_commit(msg.sender, msg.commit_index)
        return None

    def _refuse(self, reason: str) -> str:
        self.refused[reason] += 1
        return reason

    def _recover_chosen(self, state: DurableState) -> None:
        for slot in range(self.compacted + 1, state.commit_index + 1):
            if slot in state.chosen:
                self.chosen[slot] = state.chosen[slot]
            elif slot in state.accepted:
                self.chosen[slot] = state.accepted[slot][1]
            else:
                raise RecoveryError(f"log says slot {slot} is chosen but holds no value for it")
        self.commit_index = max(state.commit_index, self.compacted)
        for slot, value in state.chosen.items():
            if slot > self.commit_index:
                self.chosen[slot] = value
        # A crash can keep a learned slot's record but lose the commit record
        # written after it: the commit index covers every contiguous chosen slot.
        while self.commit_index + 1 in self.chosen:
            self.commit_index += 1
            self.accepted.pop(self.commit_index, None)

    def _emit_committed(self) -> None:
        while self._emitted_index < self.commit_index:
            self._emitted_index += 1
            self._out.committed.append((self._emitted_index, self.chosen[self._emitted_index]))
