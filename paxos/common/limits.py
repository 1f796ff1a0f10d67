"""Every named limit of paxoskv in one place.

Times are in core ticks; the server drives the core with one tick every
``TICK_SECONDS``.  Sizes are bytes unless a name says otherwise.
"""

from __future__ import annotations

TICK_SECONDS = 0.01

# Leader liveness.  A follower that hears nothing from the leader for a random
# number of ticks in [ELECTION_TICKS_MIN, ELECTION_TICKS_MAX) starts phase 1.
HEARTBEAT_TICKS = 5
ELECTION_TICKS_MIN = 30
ELECTION_TICKS_MAX = 60
# A leader that has not heard from a quorum for this long steps down, so that
# clients waiting on it fail over instead of waiting for their deadline.
LEADER_QUORUM_TIMEOUT_TICKS = ELECTION_TICKS_MAX
# Unanswered accepts and catch-up requests are sent again after this long.
RETRANSMIT_TICKS = 20
# Read lease.  For ELECTION_TICKS_MIN // 2 ticks after hearing from its
# leader (and after starting), a server refuses pre-votes and prepares from
# rivals (leader stickiness).  So once a quorum has acknowledged a heartbeat,
# no rival can win phase 1 until every member of that quorum has left that
# window, and the leader answers linearizable reads without a round of its
# own for LEASE_TICKS after sending that heartbeat.  The core caps the lease
# to leave a margin for one tick of clock granularity at each end and clock
# rates differing by up to 10%.  0 turns leases off: every read then waits
# for a heartbeat round of its own.
LEASE_TICKS = 9
# The ticker runs the core's clock at most this many ticks at once; after a
# longer stall the clock skips ahead instead of replaying every tick.
MAX_CATCHUP_TICKS = 1000

# Replication pipeline.
# Few slots in flight: while they are out, new commands pile up and go out
# together, so a busy leader sends fewer, larger batches.
MAX_IN_FLIGHT_SLOTS = 4
MAX_BATCH_COMMANDS = 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_PENDING_COMMANDS = 20_000
MAX_PENDING_READS = 20_000
MAX_CATCHUP_ENTRIES = 1024
MAX_CATCHUP_BYTES = 8 * 1024 * 1024

# Client-visible data limits.
MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
# The largest --max-value-bytes a server accepts.  The peer path checks every
# command against this cluster-wide bound, not against a server's own flag:
# a follower with a smaller flag must still accept what its leader proposed.
MAX_VALUE_BYTES_CEILING = 4 * 1024 * 1024
# A client-named session's id (from before sessions were registered).
MAX_CLIENT_ID_BYTES = 128
# Client sessions kept, with their results for retried writes; opening one
# more evicts the least recently used (in apply order, the same on every
# replica).  A write in an evicted session is refused as SESSION_EXPIRED, so
# the bound costs the evicted client its session, never exactly-once.
MAX_CLIENT_SESSIONS = 100_000
# A client session may have writes with sequence numbers from its oldest
# unacknowledged one up to this many above it; a write beyond that window is
# refused (the library opens a new session instead), so a session never holds
# more results than this and no result a retry may need is ever dropped.
SESSION_WINDOW = 1024

# Client retries (client/retry.py).  One attempt against one server: a
# stalled server costs at most this much before the client tries another.
CLIENT_ATTEMPT_SECONDS = 1.0
# Pause after a transport error, so that a dead cluster is not hammered.
CLIENT_ERROR_BACKOFF_SECONDS = 0.02
# Pause when no server names a usable leader (an election is running) or
# redirects go round in circles on stale hints.
CLIENT_NO_LEADER_BACKOFF_SECONDS = 0.05

# Images: perceptual hashes are 288 bits (see client/images.py and
# docs/images.md); one iset stores up to MAX_IMAGE_HASHES of them.
IMAGE_HASH_BYTES = 36
# The full frame, its mirror image, four border crops and two small rotations
# (client/images.py `variant_images`); the first names the image.
MAX_IMAGE_HASHES = 8
MAX_METADATA_BYTES = 64 * 1024
MAX_IMAGE_MATCHES = 100
# Client-side JPEG decoding (client/images.py). JPEGs are decoded at 1/2 to
# 1/8 scale, so the decompression-bomb limit applies to that decoded size;
# what a JPEG header may claim is bounded separately. 2**28 pixels covers the
# 200-megapixel sensors of current phones.
MAX_JPEG_PIXELS = 2**28
# A baseline JPEG spends at least a few bits per 8x8 block even on a plain
# black frame (about 64 pixels per byte with standard tables, a few hundred
# with optimised progressive coding); a header claiming more pixels per byte
# of file than this is a forged or truncated file, refused before decoding.
MAX_JPEG_PIXELS_PER_BYTE = 1024
# Chunk width of the multi-index hash table, fixed so that every replica
# builds the same index and none stalls to widen it before ~130,000 hashes.
IMAGE_INDEX_CHUNK_BITS = 17

# Peer input bounds.  Every number a peer sends is checked against these on
# the way in (paxos/server/codec.py, paxos/consensus/core.py), so nothing a peer says can make
# a server overflow a field, allocate without bound or wedge the cluster.
# Member and cluster ids are below 2^63 and never 0.
MAX_MEMBER_ID = 2**63 - 1
# A data dir's incarnation (paxos/incarnation.py) is any nonzero fixed64; a
# server remembers at most this many members' incarnations (members come and
# go, but never this many: a full book refuses members it never heard from).
MAX_INCARNATION = 2**64 - 1
MAX_INCARNATION_BOOK = 4096
# A server with an empty data dir asks the others before founding the
# cluster: this often, each question with this deadline, and it logs whom it
# waits for once per REFUSAL_LOG_SECONDS.
FOUNDING_RETRY_SECONDS = 0.15
FOUNDING_ASK_SECONDS = 1.0
# A configuration's size and its members' names and addresses
# (paxos/consensus/membership.py); the hostfile's names are at most 63 characters.
MAX_MEMBERS = 64
MAX_MEMBER_NAME_BYTES = 63
MAX_MEMBER_ADDRESS_BYTES = 300
# A learner is promoted to voter only once its applied index is within this
# many slots of the leader's commit index (paxos/replica.py).
PROMOTION_LAG_SLOTS = 100
# Slots and ballot rounds arriving from peers stay at or below these; the
# core only notes rounds below MAX_BALLOT_ROUND, so one more than any round
# it has seen still passes every peer's check.
MAX_SLOT = 2**62
MAX_BALLOT_ROUND = 2**62
# A ballot this many rounds above the highest one a server has seen is
# refused: honest candidates raise the round by one per attempt, and a
# forged huge round would otherwise pin every later ballot above it.
MAX_ROUND_STEP = 2**32
# An acceptor refuses to accept a slot more than this far above its commit
# index.  A leader keeps at most MAX_IN_FLIGHT_SLOTS open, so an honest accept
# beyond the window only reaches a follower that lags far behind; it catches
# up from the commit index first (the leader retransmits).  Without the
# window one forged far slot makes every new leader re-propose every slot
# up to it.
MAX_ACCEPT_WINDOW = 1024
# One encoded client command in the log: a value at the ceiling plus its key,
# client id, image metadata and encoding.
MAX_COMMAND_BYTES = MAX_VALUE_BYTES_CEILING + 128 * 1024
# One slot's value: a batch is cut at MAX_BATCH_BYTES unless its first command
# alone is larger.
MAX_SLOT_VALUE_BYTES = MAX_BATCH_BYTES + MAX_COMMAND_BYTES
# A refused peer message is logged at most once per peer and reason per
# interval; every one is counted.
REFUSAL_LOG_SECONDS = 10.0

# Client session streams (the KV Session RPC, paxos/server/session.py).  A batch
# above either bound has its requests refused; a request beyond the in-flight
# bound is refused as UNAVAILABLE (retry later).  Refusals are counted and
# logged once per sender and reason per REFUSAL_LOG_SECONDS.  The library
# cuts its batches to fit and keeps within the in-flight bound.
MAX_SESSION_BATCH_REQUESTS = 1024
# One write at the value ceiling must fit in a batch of its own.
MAX_SESSION_BATCH_BYTES = 2 * MAX_COMMAND_BYTES
MAX_SESSION_IN_FLIGHT = 4096
# Replies a client has not read yet.  A session stream serves a read only
# while the replies it holds for its client (queued, and the message gRPC is
# sending) come to less than MAX_SESSION_REPLY_BYTES; past it the read waits
# and the stream stops reading the client's batches until the client reads.
# So one stream holds at most that plus one reply.  The largest reply is a
# value at the ceiling or a full page of image matches.
MAX_REPLY_BYTES = max(MAX_VALUE_BYTES_CEILING, MAX_IMAGE_MATCHES * MAX_METADATA_BYTES) + 64 * 1024
MAX_SESSION_REPLY_BYTES = 2 * 1024 * 1024
# Server-wide: at most this many session streams, and reads wait (as above)
# while all the streams together hold this many reply bytes.  A stream
# opened beyond either bound gets RESOURCE_EXHAUSTED.
MAX_SESSION_STREAMS = 64
MAX_SESSION_REPLY_BYTES_TOTAL = 128 * 1024 * 1024

# Transport.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Connections (paxos/server/connections.py).  gRPC accepts at most the open-file
# limit less FD_HEADROOM connections (and at most MAX_INCOMING_CONNECTIONS,
# at least MIN_CONNECTION_CAP): the headroom keeps descriptors for the
# streams to peers, the data dir and the metrics HTTP server.  A connection
# that has not finished its handshake (for plaintext: sent its HTTP/2
# preface and settings) within HANDSHAKE_SECONDS, or has had no call open for
# CONNECTION_IDLE_SECONDS, is closed.  A leader whose descriptors are at the
# cap and that has served no client request for CLIENT_STARVED_SECONDS hands
# leadership over and stays out of elections for STEP_DOWN_ABSTAIN_TICKS.
FD_HEADROOM = 512
MAX_INCOMING_CONNECTIONS = 1_000_000
MIN_CONNECTION_CAP = 64
HANDSHAKE_SECONDS = 5.0
# Long enough that a client between bursts keeps its connection (gRPC clients
# log a line for every connection closed this way).
CONNECTION_IDLE_SECONDS = 120.0
CLIENT_STARVED_SECONDS = 5.0
STEP_DOWN_ABSTAIN_TICKS = 5 * ELECTION_TICKS_MAX
PEER_QUEUE_LIMIT = 10_000
# Messages queued for one peer leave packed in one stream message, cut at
# these bounds (a lone message larger than the byte bound goes alone).  A
# received envelope packing more messages than this is refused whole.
MAX_PEER_PACKED_MESSAGES = 1024
MAX_PEER_PACKED_BYTES = 16 * 1024 * 1024
DEFAULT_PORT = 50051

# Data directory: the lock file holds the PID of the server using the
# directory; a refused starter reads at most this much of it for its message.
LOCK_FILE_READ_BYTES = 32

# Metrics and health over plain HTTP (--metrics HOST:PORT).  Whoever can
# reach the port is not trusted: a request is cut off past this size or
# after this long.  Beyond the cap on connections, a new one takes the
# place of the oldest still reading its request after HTTP_SLOW_REQUEST_SECONDS
# (an honest request arrives in one packet), or is closed at once if there
# is none; so slow clients cannot starve the health probe.
HTTP_MAX_REQUEST_BYTES = 8 * 1024
HTTP_MAX_HEADER_LINES = 64
HTTP_READ_SECONDS = 5.0
HTTP_SLOW_REQUEST_SECONDS = 0.5
HTTP_MAX_CONNECTIONS = 32

# Snapshots and log compaction.  A server snapshots its state once this many
# commands were applied since the last snapshot, or once its log holds this
# many bytes (--snapshot-every overrides the command count), then forgets
# the chosen values up to the snapshot except the newest SNAPSHOT_TAIL_SLOTS,
# so a peer that lags briefly catches up from the log, not by snapshot.
SNAPSHOT_EVERY_COMMANDS = 20_000
SNAPSHOT_LOG_BYTES = 64 * 1024 * 1024
SNAPSHOT_TAIL_SLOTS = 2_000
# Snapshots kept in the data dir: the newest, and older ones to fall back to
# should the newest be damaged.
SNAPSHOTS_KEPT = 2
# One frame of a snapshot file (a batch of keys, sessions or images).  A
# frame holds at least one entry, so the bound must fit the largest command.
SNAPSHOT_FRAME_TARGET_BYTES = 1024 * 1024
MAX_SNAPSHOT_FRAME_BYTES = 2 * MAX_COMMAND_BYTES
# Snapshot transfer between servers: chunk size, and the largest snapshot a
# server accepts from a peer.
SNAPSHOT_CHUNK_BYTES = 1024 * 1024
# A snapshot transfer that receives nothing for this long is abandoned (and
# asked for again later).
SNAPSHOT_CHUNK_SECONDS = 10.0
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024 * 1024
# TLS (paxos/common/tlsfiles.py, paxos/certs.py).  A PEM file larger than this is
# not a certificate or key this project wrote, and is refused unread.
MAX_PEM_BYTES = 64 * 1024
# Certificates made by python -m paxos.certs are valid this long by default.
DEFAULT_CERT_DAYS = 825
# A server checks its certificate files for a change at most this often.
TLS_RELOAD_CHECK_SECONDS = 1.0
# Under --client-auth none, TLS does not ask callers for a certificate, so a
# peer proves it is a member by signing the stream's opening with its key;
# a proof older or newer than this (clock skew included) is refused.
PEER_PROOF_MAX_AGE_SECONDS = 300
# How long a leader waits for a server it is asked to add to say that it is
# waiting to join this cluster (within the ChangeMembers call's own deadline).
JOINER_CHECK_SECONDS = 2.0
# A leader numbers the session registrations it proposes from a random
# start of this many bits (a uint64 on the wire), so no two of its processes
# share a number in practice.
REGISTRATION_NONCE_BITS = 62
# Cluster versions (paxos/clusterversion.py).  A leader raises the cluster
# version only while every member's report is at most this old: every peer
# message carries one, and a follower acknowledges a heartbeat every
# HEARTBEAT_TICKS, so a member that is up is never this quiet.  A member that
# is down holds the raise back, which is what an operator mid-upgrade wants.
VERSION_REPORT_SECONDS = ELECTION_TICKS_MIN * TICK_SECONDS
# A raise the leader proposed and has not seen applied for this long is
# proposed again (one at a time; applying a second copy changes nothing).
VERSION_RAISE_RETRY_SECONDS = 10 * ELECTION_TICKS_MAX * TICK_SECONDS

# How the limits above depend on each other, checked at import: each is a
# relation some code relies on, with why.
_RELATIONS = {
    # The election timeout is drawn from [min, max) (random.randrange).
    "ELECTION_TICKS_MIN < ELECTION_TICKS_MAX": ELECTION_TICKS_MIN < ELECTION_TICKS_MAX,
    # A follower hears its leader again within its stickiness window, so it
    # keeps refusing rivals' pre-votes while the leader is healthy.
    "HEARTBEAT_TICKS < ELECTION_TICKS_MIN // 2": HEARTBEAT_TICKS < ELECTION_TICKS_MIN // 2,
    # A healthy leader hears a quorum's heartbeat acks before it gives up on them.
    "HEARTBEAT_TICKS < LEADER_QUORUM_TIMEOUT_TICKS": HEARTBEAT_TICKS < LEADER_QUORUM_TIMEOUT_TICKS,
    # The lease in effect is the named one: the core cuts any longer lease to
    # the stickiness window less a tick at each end and 10% of clock drift.
    "LEASE_TICKS <= (ELECTION_TICKS_MIN // 2 - 2) * 0.9 / 1.1": (
        LEASE_TICKS <= (ELECTION_TICKS_MIN // 2 - 2) * 0.9 / 1.1
    ),
    # After a stall the core's clock skips ahead by MAX_CATCHUP_TICKS at most:
    # enough to end every lease, stickiness window and timeout it had running.
    "LEADER_QUORUM_TIMEOUT_TICKS <= MAX_CATCHUP_TICKS": LEADER_QUORUM_TIMEOUT_TICKS <= MAX_CATCHUP_TICKS,
    "ELECTION_TICKS_MAX <= MAX_CATCHUP_TICKS": ELECTION_TICKS_MAX <= MAX_CATCHUP_TICKS,
    # A leader that hands over stays out long enough for another voter to time out and win.
    "STEP_DOWN_ABSTAIN_TICKS > ELECTION_TICKS_MAX": STEP_DOWN_ABSTAIN_TICKS > ELECTION_TICKS_MAX,
    # A follower that is up to date accepts every slot its leader has in flight.
    "MAX_IN_FLIGHT_SLOTS <= MAX_ACCEPT_WINDOW": MAX_IN_FLIGHT_SLOTS <= MAX_ACCEPT_WINDOW,
    # A learner close enough to be promoted can catch up from the leader's log
    # (the leader keeps that tail below its snapshots), not only by snapshot.
    "PROMOTION_LAG_SLOTS <= SNAPSHOT_TAIL_SLOTS": PROMOTION_LAG_SLOTS <= SNAPSHOT_TAIL_SLOTS,
    # The largest reply fits in a reply message, which fits in a gRPC message.
    "MAX_REPLY_BYTES <= MAX_SESSION_BATCH_BYTES": MAX_REPLY_BYTES <= MAX_SESSION_BATCH_BYTES,
    "MAX_SESSION_BATCH_BYTES <= MAX_MESSAGE_BYTES": MAX_SESSION_BATCH_BYTES <= MAX_MESSAGE_BYTES,
    "MAX_COMMAND_BYTES <= MAX_SESSION_BATCH_BYTES": MAX_COMMAND_BYTES <= MAX_SESSION_BATCH_BYTES,
    # One stream alone can always get its reads served.
    "MAX_SESSION_REPLY_BYTES + MAX_REPLY_BYTES <= MAX_SESSION_REPLY_BYTES_TOTAL": (
        MAX_SESSION_REPLY_BYTES + MAX_REPLY_BYTES <= MAX_SESSION_REPLY_BYTES_TOTAL
    ),
    # An accept carries one slot's value (a batch, or one command larger than a batch).
    "MAX_SLOT_VALUE_BYTES <= MAX_MESSAGE_BYTES": MAX_SLOT_VALUE_BYTES <= MAX_MESSAGE_BYTES,
    # A catch-up reply is cut at MAX_CATCHUP_BYTES (or is one slot's value).
    "MAX_CATCHUP_BYTES <= MAX_MESSAGE_BYTES": MAX_CATCHUP_BYTES <= MAX_MESSAGE_BYTES,
    # Peer messages are packed up to MAX_PEER_PACKED_BYTES (a larger one goes alone).
    "MAX_PEER_PACKED_BYTES <= MAX_MESSAGE_BYTES": MAX_PEER_PACKED_BYTES <= MAX_MESSAGE_BYTES,
    # A snapshot chunk travels in one message.
    "SNAPSHOT_CHUNK_BYTES <= MAX_MESSAGE_BYTES": SNAPSHOT_CHUNK_BYTES <= MAX_MESSAGE_BYTES,
    # A snapshot frame is cut after the entry that reaches the target, and an
    # entry is at most a command's size: every frame a server writes, it reads.
    "SNAPSHOT_FRAME_TARGET_BYTES + MAX_COMMAND_BYTES <= MAX_SNAPSHOT_FRAME_BYTES": (
        SNAPSHOT_FRAME_TARGET_BYTES + MAX_COMMAND_BYTES <= MAX_SNAPSHOT_FRAME_BYTES
    ),
    # The connection cap is clamped between these two (paxos/server/connections.py).
    "MIN_CONNECTION_CAP <= MAX_INCOMING_CONNECTIONS": MIN_CONNECTION_CAP <= MAX_INCOMING_CONNECTIONS,
    # Registration nonces count up from a random start within the uint64 on the wire.
    "REGISTRATION_NONCE_BITS < 64": REGISTRATION_NONCE_BITS < 64,
    # A healthy member reports to its leader (acknowledging a heartbeat) well
    # within the window in which its report counts.
    "HEARTBEAT_TICKS * TICK_SECONDS * 2 < VERSION_REPORT_SECONDS": (
        HEARTBEAT_TICKS * TICK_SECONDS * 2 < VERSION_REPORT_SECONDS
    ),
}
for _relation, _holds in _RELATIONS.items():
    if not _holds:
        raise AssertionError(f"paxos/common/limits.py: {_relation} does not hold")
