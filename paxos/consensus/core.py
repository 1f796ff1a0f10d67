"""The Multi-Paxos consensus core, without I/O.

``Node`` is a deterministic state machine.  Its host feeds it peer messages
(``receive``), client commands (``propose``), read requests (``read``) and
clock ticks (``tick``), then collects a ``Ready`` bundle: records to make
durable, messages to send, chosen values to apply, reads that may be
answered.  The host must persist a bundle's records before it acts on the
rest of that bundle.  Nothing in here opens a socket, reads a clock, sleeps
or touches a file; randomness comes from the ``random.Random`` it is given.

Roles, each in a section of its own (the learner's in paxos/consensus/learner.py,
which ``Node`` inherits, as it does the invariant checks of
paxos/consensus/invariants.py; the types they share are in
paxos/consensus/state.py):

* acceptor: keeps the highest promised ballot and the accepted value per slot;
* proposer: a candidate runs phase 1 once for every slot above what it knows
  to be chosen, re-proposes what the promises reported and fills gaps with
  no-ops, then as leader runs phase 2 per slot (one batch of commands each);
* learner: advances the commit index from quorums of ``Accepted``, from the
  leader's commit index, or by catch-up from a peer.
"""

from __future__ import annotations

import functools
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Concatenate, ParamSpec, TypeVar, assert_never

from paxos.common import limits
from paxos.consensus.invariants import InvariantChecks
from paxos.consensus.learner import Learner
from paxos.consensus.membership import Membership
from paxos.consensus.messages import (
    NOOP,
    Accept,
    Accepted,
    AcceptedEntry,
    AcceptRecord,
    Ballot,
    CatchupReply,
    CatchupRequest,
    CommitRecord,
    DurableState,
    Heartbeat,
    HeartbeatAck,
    Message,
    NodeId,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    PromiseRecord,
    Ready,
    Reject,
    Slot,
    Value,
)
from paxos.consensus.planted import PlantedBug
from paxos.consensus.quorum import MajorityConfig
from paxos.consensus.state import (
    PLANTABLE_BUGS,
    Config,
    HostContractError,
    InvariantError,
    LeaderState,
    LearnersCounted,
    PendingRead,
    Proposal,
    RecoveryError,
    Role,
)

# What the rest of the code takes from here, besides Node.
__all__ = ["PLANTABLE_BUGS", "Config", "HostContractError", "InvariantError", "Node", "RecoveryError", "Role"]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _step(method: Callable[Concatenate[Node, _P], _R]) -> Callable[Concatenate[Node, _P], _R]:
    """A step of the core: its invariants hold again once it returns (when the config checks them)."""

    @functools.wraps(method)
    def step(self: Node, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        result = method(self, *args, **kwargs)
        if self.config.check_invariants:
            self._check_invariants(method.__name__)
        return result

    return step


class Node(Learner, InvariantChecks):
    """One server's consensus state; see the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        members: Iterable[NodeId] | Membership,
        rng: random.Random,
        config: Config | None = None,
        durable: DurableState | None = None,
        snapshot_index: Slot = 0,
    ) -> None:
        """``snapshot_index``: the host's state machine starts with every slot up to it applied.

        ``members``: the configuration as of ``snapshot_index`` (bare ids are
        voters); configurations chosen in the log above it take over from
        it.  This server need not be a member: a server joining the cluster
        waits outside it, and a removed one stays out.
        """
        unknown = [bug for bug in (config.planted_bugs if config else ()) if not isinstance(bug, PlantedBug)]
        if unknown:
            raise ValueError(f"unknown planted bugs: {sorted(map(str, unknown))} (plant PlantedBug members)")
        self.id = node_id
        self.config = config or Config()
        self._set_membership(members if isinstance(members, Membership) else Membership.of_voters(members))
        # A configuration was chosen since the last bundle (see ready()),
        # and the members it removed, to be told by this leader.
        self._membership_changed = False
        self._removed_peers: set[NodeId] = set()
        # See limits.LEASE_TICKS: the lease must end well inside the
        # stickiness window of every server that confirmed it.
        self._sticky_ticks = self.config.election_ticks_min // 2
        self._lease_ticks = max(0, min(self.config.lease_ticks, int((self._sticky_ticks - 2) * 0.9 / 1.1)))
        self._rng = rng
        state = durable or DurableState()
        # acceptor
        self.promised: Ballot = state.promised
        # Only slots above the commit index: chosen slots live in ``chosen``.
        self.accepted: dict[Slot, tuple[Ballot, Value]] = {
            slot: entry for slot, entry in state.accepted.items() if slot > max(state.commit_index, snapshot_index)
        }
        # learner.  Every slot up to ``compacted`` is chosen and held only in
        # a snapshot; ``chosen`` holds the values above it.
        self.chosen: dict[Slot, Value] = {}
        self.compacted: Slot = snapshot_index
        self.commit_index: Slot = snapshot_index
        self._emitted_index: Slot = snapshot_index
        self._recover_chosen(state)
        for slot in range(self.compacted + 1, self.commit_index + 1):
            chosen_config = self.config.configurations.decode(self.chosen[slot])
            if chosen_config is not None:
                self._set_membership(chosen_config)
        # The peer whose snapshot the host is fetching for us, if any.
        self._snapshot_from: NodeId | None = None
        self._leader_commit_hint: Slot = self.commit_index
        self._catchup_from: NodeId | None = None
        self._catchup_sent_at: int | None = None
        # The one catch-up request whose answer would be accepted, and a few
        # earlier ones whose late or duplicate answers are ignored quietly.
        self._catchup_asked: tuple[NodeId, Slot] | None = None
        self._catchup_asked_before: deque[tuple[NodeId, Slot]] = deque(maxlen=8)
        # proposer
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self._max_round_seen = self.promised.round
        self._candidate_ballot: Ballot | None = None
        self._promises: dict[NodeId, Promise] = {}
        self._prevote_ballot: Ballot | None = None
        self._prevotes: set[NodeId] = set()
        self._lead: LeaderState | None = None
        self._pending: deque[bytes] = deque()
        # This leader's own accepts, counted as votes only once the host has
        # made them durable: those proposed since the last bundle, and those
        # handed out in it (durable by the next ``ready`` call).
        self._own_accepts_new: list[tuple[Ballot, Slot]] = []
        self._own_accepts_out: list[tuple[Ballot, Slot]] = []
        # time
        self.now = 0
        self._last_leader_contact = -(10**9)
        self._election_deadline = 0
        self._abstain_until = 0  # no campaign before this tick (after step_down)
        self._reset_election_timer()
        self._out = Ready()
        self._outstanding: Ready | None = None  # handed out by ready(), not yet advanced
        # Peer messages refused as impossible from an honest member, by reason.
        self.refused: Counter[str] = Counter()
        # (compaction point, commit index, count of chosen slots) when the chosen slots were last walked.
        self._checked_log_shape: tuple[Slot, Slot, int] | None = None
        if self.config.check_invariants:
            self._check_invariants("recovery")

    # ------------------------------------------------------------------ inputs

    @_step
    def tick(self) -> None:
        self.now += 1
        if self.role is Role.LEADER:
            self._leader_tick()
        elif self.now >= self._election_deadline:
            if self.id in self.voters and self.now >= self._abstain_until:
                self._start_prevote()
            else:
                self._reset_election_timer()  # a learner or a non-member never campaigns
        self._maybe_catch_up()

    @_step
    def receive(self, msg: Message) -> str | None:
        """Take one peer message; the reason it was refused, or None.

        A refused message changes nothing but ``refused``: it could not have
        come from an honest member (a forgery, a bug, a message for another
        configuration).  Late and duplicate messages are normal and are
        ignored without being refused.
        """
        reason = self._refusal(msg)
        if reason is not None:
            self.refused[reason] += 1
            return reason
        match msg:
            case PreVote():
                self._on_prevote(msg)
            case PreVoteReply():
                self._on_prevote_reply(msg)
            case Prepare():
                self._on_prepare(msg)
            case Promise():
                self._on_promise(msg)
            case Accept():
                self._on_accept(msg)
            case Accepted():
                self._on_accepted(msg)
            case Reject():
                self._on_reject(msg)
            case Heartbeat():
                self._on_heartbeat(msg)
            case HeartbeatAck():
                self._on_heartbeat_ack(msg)
            case CatchupRequest():
                self._on_catchup_request(msg)
            case CatchupReply():
                return self._on_catchup_reply(msg)
            case _:
                assert_never(msg)
        return None

    def _refusal(self, msg: Message) -> str | None:
        """Why ``msg`` cannot be from an honest member, or None.

        The codec has already bounded every number and size; this checks
        what only the core can judge: membership, ballots far above anything
        seen, slots far above the commit index, fields that contradict each
        other.
        """
        if msg.sender == self.id:
            return "claims to come from this server"
        if msg.sender not in self.membership_ids and not isinstance(msg, Heartbeat | CatchupReply | CatchupRequest):
            # Honest when this server lags behind a change that added the
            # sender, or was removed: a forgery otherwise.  A heartbeat is
            # taken as a hint to catch up (see _on_heartbeat), a catch-up
            # reply only as the answer to a request, and a catch-up request
            # is served (a removed server learns that it was removed).
            return "sender is not in this server's configuration"
        ballot: Ballot | None
        match msg:
            case PreVote() | Prepare() | Accept() | Heartbeat():
                # Each proposes or asserts the sender's own ballot.
                if msg.ballot.node != msg.sender:
                    return "ballot of another member"
                ballot = msg.ballot
            case Promise():
                if any(e.ballot > msg.ballot for e in msg.accepted):
                    return "promise reports a value accepted above the promised ballot"
                # The window runs from the higher of the two commit indexes: a
                # member far behind (its log's slots are in the others'
                # snapshots) may have led for a moment and accepted its own
                # proposals at the top, far above its own commit index.
                window_top = max(msg.commit_index, self.commit_index) + limits.MAX_ACCEPT_WINDOW
                if any(e.slot > window_top for e in msg.accepted):
                    return "promise reports a slot beyond the accept window"
                ballot = msg.ballot
            case PreVoteReply() | Accepted() | HeartbeatAck():
                ballot = msg.ballot
            case Reject():
                ballot = msg.promised
            case CatchupRequest() | CatchupReply():
                ballot = None
            case _:
                assert_never(msg)
        if ballot is not None and (
            ballot.round >= limits.MAX_BALLOT_ROUND or ballot.round > self._max_round_seen + limits.MAX_ROUND_STEP
        ):
            return "ballot round far above any seen"
        if isinstance(msg, Accept):
            if msg.slot > self.commit_index + limits.MAX_ACCEPT_WINDOW:
                return "accept beyond the accept window"
            if msg.commit_index >= msg.slot:
                return "accept for a slot its own commit index covers"
        return None

    @_step
    def propose(self, command: bytes) -> bool:
        """Queue one encoded command; False when not leader or too busy."""
        if self._lead is None or len(self._pending) >= self.config.max_pending_commands:
            return False
        self._pending.append(command)
        return True

    @_step
    def propose_change(self, membership: Membership) -> str | None:
        """Ask for a membership change; why it cannot be made, or None.

        The change is one step from the configuration (see
        ``Membership.step_error``) and waits, queued, until a value of this
        leader's ballot is chosen and nothing else is in flight; it is made
        once its slot is chosen, which the host learns by applying it.  One
        change at a time: a second is refused until the first is chosen.
        """
        lead = self._lead
        if lead is None:
            return "this server is not the leader"
        base = self.membership
        if (lead.change_slot is not None or lead.change_wanted is not None) and (
            PlantedBug.TWO_CHANGES_IN_FLIGHT not in self.config.planted_bugs
        ):
            return "another membership change is not finished yet"
        error = base.step_error(membership)
        if error:
            return error
        # The planted bug learner_votes promotes a learner without these checks.
        checked = PlantedBug.LEARNER_VOTES not in self.config.planted_bugs
        for promoted in membership.voters - base.voters:
            member = membership.get(promoted)
            name = member.name if member else str(promoted)
            silent = self.now - lead.last_heard.get(promoted, -(10**9)) >= self.config.leader_quorum_timeout_ticks
            if (promoted not in lead.peer_commit or silent) and checked:
                return f"learner {name} is not answering this leader, so how far behind it is is unknown"
            learner_commit = lead.peer_commit.get(promoted, 0)
            lag = self.commit_index - learner_commit
            if lag > limits.PROMOTION_LAG_SLOTS and checked:
                return (
                    f"learner {name} is {lag} slots behind the leader; it is promoted once it is within "
                    f"{limits.PROMOTION_LAG_SLOTS}"
                )
            if learner_commit < self.compacted and checked:
                # It cannot catch up from this leader's log: it needs a
                # snapshot first.  A voter that can only learn by snapshot
                # may be left, when the others go, a voter that cannot
                # learn the configuration it votes in.
                return (
                    f"learner {name} has not yet installed a snapshot (it knows slot {learner_commit}, "
                    f"the leader's log starts after slot {self.compacted}); it is promoted once it has"
                )
        lead.change_wanted = membership
        return None

    def member_progress(self) -> dict[NodeId, Slot]:
        """On the leader: each member's commit index, as its last heartbeat ack reported it."""
        return dict(self._lead.peer_commit) if self._lead is not None else {}

    @property
    def change_in_progress(self) -> bool:
        """Whether this leader has a membership change asked for or in flight."""
        lead = self._lead
        return lead is not None and (lead.change_slot is not None or lead.change_wanted is not None)

    @_step
    def step_down(self, abstain_ticks: int) -> bool:
        """Stop leading and stay out of elections for ``abstain_ticks``, so another voter is elected.

        For a host that cannot serve its clients while its peers still hear
        from it.  False, and nothing changes, if this server does not lead.
        """
        if self._lead is None:
            return False
        self._step_down()
        self._abstain_until = self.now + abstain_ticks
        return True

    @_step
    def read(self, read_id: int) -> bool:
        """Start a linearizable read; False when not leader or too busy.

        The read is reported in ``Ready.reads`` with a read index once a
        quorum has confirmed this leader's ballot after the call and every
        slot that may hold a chosen value is known.
        """
        lead = self._lead
        if lead is None or len(lead.reads) + len(lead.confirmed_reads) >= self.config.max_pending_reads:
            return False
        if lead.change_slot is not None:
            # Slots above an unfinished change may hold values chosen under
            # the next configuration that this ballot cannot see.
            return False
        read_index = lead.next_slot - 1
        if PlantedBug.UNCONFIRMED_READ in self.config.planted_bugs:
            self._out.reads.append((read_id, self.commit_index))
            return True
        if self._holds_lease(lead):
            lead.confirmed_reads.append(PendingRead(read_id, read_index, 0))
            return True
        lead.reads.append(PendingRead(read_id, read_index, lead.heartbeat_seq + 1))
        lead.read_round_wanted = True
        return True

    def lease_read_index(self) -> Slot | None:
        """The read index for a read answered right now under the lease, or None.

        A value is safe to return once the caller has applied every slot up
        to the index; until then (or on None) use ``read``.  The host must
        bring the clock up to date (``tick``) before asking.
        """
        lead = self._lead
        if lead is None or lead.change_slot is not None or not self._holds_lease(lead):
            return None
        return lead.next_slot - 1

    def _holds_lease(self, lead: LeaderState) -> bool:
        # ``now`` may be up to one tick behind the host's clock.
        return self.now + 1 < lead.lease_until

    def ready(self) -> Ready:
        """Hand over everything produced since the last bundle.

        The host does what the bundle asks, in the order ``Ready`` states,
        then calls ``advance`` with it; only then may it ask for the next.
        (The invariants are checked once for the two, in ``advance``.)
        """
        if self._outstanding is not None:
            raise HostContractError("ready() called again before advance() of the bundle it handed out")
        if self._membership_changed:
            self._membership_changed = False
            self._after_membership_change()
        if self.role is Role.CANDIDATE:
            self._try_to_lead()
        if self._lead is not None:
            self._flush_proposals(self._lead)
            if self._lead.read_round_wanted and self._lead.confirmed_seq >= self._lead.heartbeat_seq:
                self._send_heartbeats(self._lead)
            self._serve_confirmed_reads(self._lead)
        self._emit_committed()
        self._own_accepts_out, self._own_accepts_new = self._own_accepts_new, []
        out, self._out = self._out, Ready()
        self._outstanding = out
        return out

    def advance(self, ready: Ready) -> None:
        """The host has done everything ``ready`` asked: its records are durable.

        So this leader's own accepts in it now count as votes.
        """
        if ready is not self._outstanding:
            raise HostContractError("advance() of a bundle that is not the one ready() handed out last")
        self._outstanding = None
        durable, self._own_accepts_out = self._own_accepts_out, []
        for ballot, slot in durable:
            self._on_accepted(Accepted(self.id, ballot, slot))
        # Checked once for the pair.  Most bundles are empty (the host drives
        # after every tick): then advance changed nothing, and ready() nothing
        # the next step's check would not find just as well.
        if self.config.check_invariants and not ready.empty():
            self._check_invariants("ready and advance")

    # -------------------------------------------------------------- snapshots

    @_step
    def compact(self, upto: Slot) -> None:
        """Forget the chosen values up to ``upto``: a durable snapshot holds them.

        The host passes its snapshot's applied index less the tail it keeps
        for peers that lag a little; a peer asking for a forgotten slot is
        told to fetch a snapshot.
        """
        if PlantedBug.COMPACT_ABOVE_COMMIT in self.config.planted_bugs:
            # Forgets accepted values above the commit index, as if a
            # snapshot held them: a promise no longer reports them.
            above = max(upto, self._leader_commit_hint, max(self.accepted, default=0))
            for slot in [s for s in self.accepted if s <= above]:
                del self.accepted[slot]
            upto = min(upto, self._emitted_index)
        elif upto > self._emitted_index:
            raise HostContractError(f"compact({upto}) above the applied index {self._emitted_index}")
        if upto <= self.compacted:
            return
        for slot in range(self.compacted + 1, upto + 1):
            self.chosen.pop(slot, None)
            self.accepted.pop(slot, None)
        self.compacted = upto

    @_step
    def install_snapshot(self, index: Slot, membership: Membership | None = None) -> None:
        """The host's state machine was replaced by a snapshot at ``index``, now durable.

        ``membership``: the configuration the snapshot holds.

        Call with ``index`` above the applied index, and with ``None`` via
        ``snapshot_failed`` when the transfer did not work out.
        """
        self._snapshot_from = None
        if index <= self._emitted_index:
            raise HostContractError(f"install_snapshot({index}) at or below the applied index {self._emitted_index}")
        for slot in [s for s in self.chosen if s <= index]:
            del self.chosen[slot]
        for slot in [s for s in self.accepted if s <= index]:
            del self.accepted[slot]
        self.compacted = max(self.compacted, index)
        self._emitted_index = index
        if membership is not None and membership != self.membership:
            self._set_membership(membership)
            self._membership_changed = True
        if index > self.commit_index:
            self.commit_index = index
            self._out.persist.append(CommitRecord(index))
        while self.commit_index + 1 in self.chosen:
            self._learn(self.commit_index + 1, self.chosen.pop(self.commit_index + 1))
        if self._lead is not None:
            for slot in [s for s in self._lead.in_flight if s <= self.commit_index]:
                del self._lead.in_flight[slot]
        self._catchup_sent_at = None
        self._maybe_catch_up()

    @_step
    def snapshot_failed(self) -> None:
        """The snapshot asked for in ``Ready.snapshot_wanted`` could not be had; catch-up resumes."""
        self._snapshot_from = None
        self._catchup_sent_at = None
        self._maybe_catch_up()

    # ------------------------------------------------------------ observation

    @property
    def ballot(self) -> Ballot:
        return self._lead.ballot if self._lead else self.promised

    def is_leader(self) -> bool:
        return self._lead is not None

    # -------------------------------------------------------------- membership

    def _set_membership(self, membership: Membership) -> None:
        self.membership = membership
        self.membership_ids = membership.ids
        self.voters = MajorityConfig(membership.voters)
        if PlantedBug.LEARNER_VOTES in self.config.planted_bugs:
            self.voters = LearnersCounted(membership.voters, membership.ids)
        # Accepts, heartbeats and catch-up go to every member; pre-votes and
        # prepares only to the voters.
        self.peers = sorted(membership.ids - {self.id})
        self._voter_peers = sorted(self.voters.voters - {self.id})
        if self.config.check_invariants:
            broken = self._quorum_broken()
            if broken is not None:
                raise InvariantError(f"node {self.id} with configuration [{membership.describe()}]: {broken}")

    def _after_membership_change(self) -> None:
        """A configuration was chosen: a ballot never spans two configurations.

        A leader or candidate starts a new ballot under the new voters, or,
        no longer a voter, stops; the host fails what waited on the old one
        and the clients retry.
        """
        removed, self._removed_peers = self._removed_peers, set()
        if self._lead is not None:
            # Members no longer in the configuration hear no more from us:
            # one last heartbeat carries the commit index past their removal.
            beat = Heartbeat(self.id, self._lead.ballot, self.commit_index, self._lead.heartbeat_seq)
            for peer in sorted(removed):
                self._send(peer, beat)
        if self._lead is None and self.role is not Role.CANDIDATE:
            if self.leader is not None and self.leader not in self.voters:
                # Our leader removed itself: hand over at once.  The
                # remaining voter with the lowest id campaigns now; the
                # others keep their timers in case it cannot.
                self.leader = None
                if self.id in self.voters and self.id == min(self.voters.voters):
                    self._start_prevote()
            return
        if self.id in self.voters:
            self._start_phase1()
            return
        if self._lead is not None:
            # Removed: one last heartbeat carries the commit index past the
            # change, so the others learn it now rather than by election.
            self._send_heartbeats(self._lead)
            self._step_down()
        else:
            self._abandon_candidacy()

    def _abandon_candidacy(self) -> None:
        self.role = Role.FOLLOWER
        self._candidate_ballot = None
        self._promises = {}
        self._reset_election_timer()

    # ---------------------------------------------------------------- acceptor

    def _on_prevote(self, msg: PreVote) -> None:
        if msg.sender not in self.voters:
            return  # a learner, or a voter this server does not know of yet
        granted = msg.ballot > self.promised and not self._leader_is_alive(msg.sender)
        self._send(msg.sender, PreVoteReply(self.id, msg.ballot, granted))
        if self.promised > msg.ballot:
            # Refused for a higher promise: say which, or a candidate that
            # never heard that round asks with the same ballot for ever (the
            # voters that promised it may all be unable to campaign: removed,
            # or learners as far as they know).  The candidate only picks its
            # next round above it; nothing is promised.
            self._send(msg.sender, Reject(self.id, self.promised, 0))

    def _on_prepare(self, msg: Prepare) -> None:
        if msg.sender not in self.voters:
            return  # a learner, or a voter this server does not know of yet
        self._note_round(msg.ballot)
        if self._lease_ticks and self._leader_is_alive(msg.sender):
            return  # our leader may hold a read lease on our word: no promise yet
        if msg.ballot < self.promised:
            self._send(msg.sender, Reject(self.id, self.promised, 0))
            return
        self._promise(msg.ballot)
        self._reset_election_timer()
        first = max(msg.from_slot, self.commit_index + 1)
        entries = tuple(
            AcceptedEntry(slot, ballot, value)
            for slot, (ballot, value) in sorted(self.accepted.items())
            if slot >= first
        )
        self._send(msg.sender, Promise(self.id, msg.ballot, self.commit_index, entries))

    def _on_accept(self, msg: Accept) -> None:
        self._note_round(msg.ballot)
        if msg.ballot < self.promised and PlantedBug.ACCEPT_LOWER_BALLOT not in self.config.planted_bugs:
            self._send(msg.sender, Reject(self.id, self.promised, msg.slot))
            return
        self._follow(msg.sender, msg.ballot)
        # A slot we know to be chosen can only be re-proposed with its chosen
        # value, so it is acknowledged without being stored again.
        if msg.slot > self.commit_index:
            self.accepted[msg.slot] = (msg.ballot, msg.value)
            self._out.persist.append(AcceptRecord(msg.slot, msg.ballot, msg.value))
        self._send(msg.sender, Accepted(self.id, msg.ballot, msg.slot))
        self._learn_commit(msg.sender, msg.ballot, msg.commit_index)

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        if msg.sender not in self.membership_ids:
            # A leader this server's configuration does not know yet: the
            # change that added it is in the log above our commit index.
            # Only a hint to catch up, from a ballot that could lead now, and
            # from a member this server knows (it may not know where the
            # sender is); each hint asks another, so a dead one is no trap.
            if msg.ballot >= self.promised and self.peers:
                source = self.peers[self._rng.randrange(len(self.peers))]
                self._note_leader_commit(source, msg.commit_index)
            return
        self._note_round(msg.ballot)
        if msg.ballot < self.promised:
            self._send(msg.sender, Reject(self.id, self.promised, 0))
            return
        self._follow(msg.sender, msg.ballot)
        self._send(msg.sender, HeartbeatAck(self.id, msg.ballot, msg.seq, self.commit_index))
        self._learn_commit(msg.sender, msg.ballot, msg.commit_index)

    def _promise(self, ballot: Ballot) -> None:
        if ballot > self.promised:
            self.promised = ballot
            self._out.persist.append(PromiseRecord(ballot))
        if self._lead is not None and self._lead.ballot < ballot:
            self._step_down()
        if self._candidate_ballot is not None and self._candidate_ballot < ballot:
            self._candidate_ballot = None
            self.role = Role.FOLLOWER

    def _follow(self, leader: NodeId, ballot: Ballot) -> None:
        """A leader with ``ballot`` (>= our promise) is alive."""
        self._promise(ballot)
        if leader != self.id:
            self._prevote_ballot = None  # a late grant must not depose this leader
            self.leader = leader
            self._last_leader_contact = self.now
            self._reset_election_timer()

    def _leader_is_alive(self, candidate: NodeId) -> bool:
        # Leader stickiness: while the leader we follow is heard from, refuse
        # a pre-vote to a rival.  A server that was cut off therefore cannot
        # raise the ballot and depose a healthy leader when it comes back.
        # The window is half the shortest election timeout, so a candidate
        # that timed out on a dead leader is not turned away by peers that
        # heard the leader's last heartbeat a moment later than it did.
        window = self._sticky_ticks
        if self._lease_ticks and self.now < window and candidate != self.id:
            # Just (re)started: we may have confirmed a lease before a crash.
            return True
        return (
            self.leader is not None
            and self.leader != candidate
            and (self._lead is not None or self.now - self._last_leader_contact < window)
        )

    # ---------------------------------------------------------------- proposer

    def _reset_election_timer(self) -> None:
        low, high = self.config.election_ticks_min, self.config.election_ticks_max
        self._election_deadline = self.now + self._rng.randrange(low, high)

    def _note_round(self, ballot: Ballot) -> None:
        # Rounds at or above MAX_BALLOT_ROUND are refused on the way in, so
        # the next round this server picks still passes every peer's check.
        assert ballot.round < limits.MAX_BALLOT_ROUND, ballot
        self._max_round_seen = max(self._max_round_seen, ballot.round)

    def _start_prevote(self) -> None:
        """Ask whether a quorum would promise before raising any ballot."""
        self._reset_election_timer()
        # A phase 1 that timed out (lost messages, duelling candidates) starts
        # over from the pre-vote, so a candidate cut off from the others
        # keeps its ballot where it was.
        self.role = Role.FOLLOWER
        self._candidate_ballot = None
        self.leader = None
        ballot = Ballot(max(self._max_round_seen, self.promised.round) + 1, self.id)
        self._prevote_ballot = ballot
        self._prevotes = {self.id}
        for peer in self._voter_peers:
            self._send(peer, PreVote(self.id, ballot))
        self._check_prevotes()

    def _on_prevote_reply(self, msg: PreVoteReply) -> None:
        if msg.ballot != self._prevote_ballot or self.role is not Role.FOLLOWER:
            return
        if msg.granted:
            self._prevotes.add(msg.sender)
            self._check_prevotes()

    def _check_prevotes(self) -> None:
        if self.voters.is_quorum(self._prevotes):
            self._prevote_ballot = None
            self._start_phase1()

    def _start_phase1(self) -> None:
        if self._lead is not None:
            self._step_down()
        self.role = Role.CANDIDATE
        self.leader = None
        ballot = Ballot(max(self._max_round_seen, self.promised.round) + 1, self.id)
        self._max_round_seen = ballot.round
        self._candidate_ballot = ballot
        self._promises = {}
        self._reset_election_timer()
        self._promise(ballot)
        prepare = Prepare(self.id, ballot, self.commit_index + 1)
        for peer in self._voter_peers:
            self._send(peer, prepare)
        self._on_promise(self._own_promise(ballot))

    def _own_promise(self, ballot: Ballot) -> Promise:
        entries = tuple(
            AcceptedEntry(slot, b, value)
            for slot, (b, value) in sorted(self.accepted.items())
            if slot > self.commit_index
        )
        return Promise(self.id, ballot, self.commit_index, entries)

    def _on_promise(self, msg: Promise) -> None:
        if self.role is not Role.CANDIDATE or msg.ballot != self._candidate_ballot:
            return
        self._promises[msg.sender] = msg
        self._try_to_lead()

    def _try_to_lead(self) -> None:
        """Lead once a quorum promised and every slot they know chosen is known here.

        Slots up to the highest commit index the promises report are chosen
        and may hold a configuration: until they are learned (by catch-up)
        this candidate cannot know which voters decide the slots above them.
        A configuration learned meanwhile starts a new ballot.
        """
        ballot = self._candidate_ballot
        if self.role is not Role.CANDIDATE or ballot is None or not self.voters.is_quorum(self._promises.keys()):
            return
        promises = list(self._promises.values())
        known_chosen = max(p.commit_index for p in promises)
        if known_chosen > self.commit_index and PlantedBug.CHANGE_BEFORE_OWN_VALUE not in self.config.planted_bugs:
            source = max(promises, key=lambda p: p.commit_index).sender
            self._note_leader_commit(source, known_chosen)
            return
        self._become_leader(ballot)

    def _become_leader(self, ballot: Ballot) -> None:
        promises = list(self._promises.values())
        # Slots up to the highest reported commit index are chosen and known
        # here.  Above it every quorum member reported what it accepted, so
        # the highest-ballot value is the only safe choice.
        known_chosen = max(p.commit_index for p in promises)
        best: dict[Slot, tuple[Ballot, Value]] = {}
        for promise in promises:
            for entry in promise.accepted:
                if entry.slot > known_chosen and (entry.slot not in best or entry.ballot > best[entry.slot][0]):
                    best[entry.slot] = (entry.ballot, entry.value)
        top = max([known_chosen, *best])
        self.role = Role.LEADER
        self.leader = self.id
        self._candidate_ballot = None
        lead = LeaderState(ballot=ballot, next_slot=top + 1, started=self.now)
        lead.last_heard = {p: self.now for p in self.peers}
        self._lead = lead
        if known_chosen > self.commit_index:
            source = max(promises, key=lambda p: p.commit_index).sender
            self._note_leader_commit(source, known_chosen)
        skip = PlantedBug.SKIP_REPROPOSAL in self.config.planted_bugs
        # A configuration among the recovered slots decides the slots above
        # it, under voters this ballot's quorum was not drawn from: stop
        # there; once it is chosen the next ballot recovers the rest.
        stop_at_change = PlantedBug.CHANGE_BEFORE_OWN_VALUE not in self.config.planted_bugs
        for slot in range(max(known_chosen, self.commit_index) + 1, top + 1):
            if slot in self.chosen:
                value = self.chosen[slot]
            else:
                value = NOOP if skip or slot not in best else best[slot][1]
                self._propose_in_slot(lead, slot, value)
            if stop_at_change and self.config.configurations.decode(value) is not None:
                lead.change_slot = slot
                lead.next_slot = slot + 1
                break
        lead.fresh_from = lead.next_slot
        self._send_heartbeats(lead)

    def _step_down(self) -> None:
        self._lead = None
        self._promises = {}
        self._pending.clear()
        self.role = Role.FOLLOWER
        self.leader = None
        self._out.lost_leadership = True
        self._reset_election_timer()

    def _on_reject(self, msg: Reject) -> None:
        self._note_round(msg.promised)
        mine = self._lead.ballot if self._lead else self._candidate_ballot
        if mine is None or msg.promised <= mine:
            return
        if self._lead is not None:
            self._step_down()
        else:
            # Duelling candidates: back off for a fresh random timeout.
            self._abandon_candidacy()

    def _flush_proposals(self, lead: LeaderState) -> None:
        cfg = self.config
        bugs = cfg.planted_bugs
        if lead.change_slot is not None and PlantedBug.TWO_CHANGES_IN_FLIGHT not in bugs:
            return  # nothing above an unfinished change
        if lead.change_wanted is not None:
            drained = not lead.in_flight and self.commit_index == lead.next_slot - 1
            hasty = bool(bugs & {PlantedBug.TWO_CHANGES_IN_FLIGHT, PlantedBug.CHANGE_BEFORE_OWN_VALUE})
            if (lead.own_value_chosen and drained) or hasty:
                lead.change_slot = lead.next_slot
                self._propose_in_slot(lead, lead.next_slot, self.config.configurations.encode(lead.change_wanted))
                lead.next_slot += 1
                lead.change_wanted = None
                if PlantedBug.TWO_CHANGES_IN_FLIGHT not in bugs:
                    return
            elif drained:
                # No value of this ballot is chosen yet: choose one first, so
                # that every slot an earlier leader left open is settled.
                self._propose_in_slot(lead, lead.next_slot, NOOP)
                lead.next_slot += 1
                return
            else:
                return  # the client commands queue until the change is made
        while self._pending and len(lead.in_flight) < cfg.max_in_flight:
            batch: list[bytes] = []
            size = 0
            while self._pending and len(batch) < cfg.max_batch_commands:
                nxt = len(self._pending[0])
                if batch and size + nxt > cfg.max_batch_bytes:
                    break
                batch.append(self._pending.popleft())
                size += nxt
            self._propose_in_slot(lead, lead.next_slot, tuple(batch))
            lead.next_slot += 1

    def _propose_in_slot(self, lead: LeaderState, slot: Slot, value: Value) -> None:
        lead.in_flight[slot] = Proposal(value, set(), self.now)
        self.accepted[slot] = (lead.ballot, value)
        self._out.persist.append(AcceptRecord(slot, lead.ballot, value))
        accept = Accept(self.id, lead.ballot, slot, value, self.commit_index)
        for peer in self.peers:
            self._out.early.append((peer, accept))
        self._own_accepts_new.append((lead.ballot, slot))

    def _on_accepted(self, msg: Accepted) -> None:
        lead = self._lead
        if lead is None or msg.ballot != lead.ballot:
            return
        lead.last_heard[msg.sender] = self.now
        proposal = lead.in_flight.get(msg.slot)
        if proposal is None:
            return
        proposal.acks.add(msg.sender)
        if self.voters.is_quorum(proposal.acks):
            del lead.in_flight[msg.slot]
            lead.own_value_chosen = True
            self._learn(msg.slot, proposal.value)

    def _leader_tick(self) -> None:
        lead = self._lead
        assert lead is not None
        timeout = self.config.leader_quorum_timeout_ticks
        heard = [p for p in self.peers if self.now - lead.last_heard.get(p, lead.started) < timeout]
        if not self.voters.is_quorum([self.id, *heard]):
            self._step_down()
            return
        if self.now % self.config.heartbeat_ticks == 0:
            self._send_heartbeats(lead)
        for slot, proposal in lead.in_flight.items():
            if self.now - proposal.sent_at >= self.config.retransmit_ticks:
                proposal.sent_at = self.now
                accept = Accept(self.id, lead.ballot, slot, proposal.value, self.commit_index)
                for peer in self.peers:
                    if peer not in proposal.acks:
                        self._send(peer, accept)

    # ------------------------------------------------------ reads (read index)

    def _send_heartbeats(self, lead: LeaderState) -> None:
        lead.heartbeat_seq += 1
        lead.read_round_wanted = False
        if self._lease_ticks:
            lead.heartbeat_sent[lead.heartbeat_seq] = self.now
        beat = Heartbeat(self.id, lead.ballot, self.commit_index, lead.heartbeat_seq)
        for peer in self.peers:
            self._send(peer, beat)
        self._on_heartbeat_ack(HeartbeatAck(self.id, lead.ballot, lead.heartbeat_seq, self.commit_index))

    def _on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        lead = self._lead
        if lead is None or msg.ballot != lead.ballot:
            return
        lead.last_heard[msg.sender] = self.now
        lead.peer_commit[msg.sender] = max(lead.peer_commit.get(msg.sender, 0), msg.commit_index)
        lead.acked_seq[msg.sender] = max(lead.acked_seq.get(msg.sender, 0), msg.seq)
        confirmed = self.voters.quorum_value(lead.acked_seq)
        if confirmed <= lead.confirmed_seq:
            return
        lead.confirmed_seq = confirmed
        if self._lease_ticks:
            sent = lead.heartbeat_sent.get(confirmed)
            if sent is not None:
                lead.lease_until = max(lead.lease_until, sent + self._lease_ticks)
            for seq in [s for s in lead.heartbeat_sent if s <= confirmed]:
                del lead.heartbeat_sent[seq]
        while lead.reads and lead.reads[0].need_seq <= confirmed:
            lead.confirmed_reads.append(lead.reads.popleft())
        if lead.reads:
            lead.read_round_wanted = True

    def _serve_confirmed_reads(self, lead: LeaderState) -> None:
        while lead.confirmed_reads and lead.confirmed_reads[0].read_index <= self.commit_index:
            read = lead.confirmed_reads.popleft()
            self._out.reads.append((read.read_id, read.read_index))

    # -------------------------------------------------------------------- send

    def _send(self, to: NodeId, msg: Message) -> None:
        self._out.messages.append((to, msg))
