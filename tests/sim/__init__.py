"""Deterministic simulation of a whole paxoskv cluster, FoundationDB style.

One ``random.Random(seed)`` drives everything: the cluster size (3, 5 or 7),
every node's core rng, the network, the disks, the clocks, the faults and
the clients.  Time is simulated in integer microseconds and nothing reads a
real clock or iterates an unordered collection, so a seed replays exactly::

    python -m tests.sim --seed 1234 [--verbose | --timeline] [--bug NAME]
    python -m tests.sim --seeds 10000 [--start N] [--nodes 3,5,7] [--bug NAME] [--jobs J]

What is simulated, each piece mirroring the real thing it stands for:

* ``Host`` (``host.py``) is one server process running the shipped ``paxos.replica.Replica``
  (the same class the gRPC server runs) on a simulated disk, network and
  clock.  ``SimDisk`` (``disk.py``) makes appended records durable after a simulated fsync
  latency (with occasional stalls); a crash loses what was not fsynced,
  except for a random prefix (a torn WAL tail), and in some seeds a crash
  strikes while an fsync of votes is under way.  Each node's clock runs at
  its own rate, within 5% or 10% of the true one (uniformly, or in some
  seeds at either end: 10% is the bound the read lease is built for, see
  ``Profile.clock_drift``), and its ticker wakes late now and then; after
  a stall the piled-up ticks, messages and requests run in random order,
  and the replica's clock counts the stall (a monotonic clock keeps
  running while a process is stopped).  What the
  replica does with all that (order of effects, apply, answers, leases) is
  the product's own code, not a copy.  So is what admits peer messages and
  follows membership: each host's ``Roster`` (``paxos/server/roster.py``:
  the server's ``AddressBook`` of its hostfile and what the configuration
  adds, and its codec) follows the configuration when the server does (at
  start, when one is applied, when a snapshot is installed), encodes what
  goes out, and drops what is addressed to a server it has no address
  for; every message comes in through the server's ``PeerIngress`` as on
  a TLS stream (the certificate names the sending server).
* ``Client`` (``clients.py``) drives ``client/retry.py``, the retry policy ``KVClient`` ships
  with (leader hints, a rotation over the servers, 1 s attempts inside an
  operation deadline, "unknown outcome" only when some attempt may have
  reached a server), in simulated time, and sends the same (client_id, seq,
  first_unacked) on every retry of a write.  Each client records its
  operations for ``tests/harness/lincheck.py``.
* the network (``network.py``): every peer link is one FIFO stream of messages in their
  wire form, stamped with the sender's incarnation (LAN or WAN latency and
  jitter per seed) with per-seed loss, duplication and reordering.  A cut
  link either holds its traffic until the cut heals (the stream survived) or
  drops it (the stream was reset), chosen per direction, and comes back
  after its own reconnect delay.  Clients sit on one side of a cut, and their
  connection attempts across it are refused or dropped.
* snapshots: every seed snapshots every few commands (``Profile``) and keeps
  a short tail, so replicas compact their logs, restart from snapshots and
  fetch each other's snapshots all the time.  A snapshot is written after
  a while and a crash before then loses it (a torn temporary file); a
  transfer takes a while, may fail, hang until its timeout, or deliver the
  source's older snapshot (which the replica must ignore); a crash at any
  of these steps is survived from what was durable.  ``thaw`` rebuilds a
  state machine through the same parts a snapshot file holds.
* membership changes (``faults/membership.py``), at a rate drawn per seed:
  spare servers are added as learners (each starts with the configuration
  it would learn from the cluster), learners promoted and members removed,
  the leader included, sometimes two asked for back to back; deposing the
  leader sometimes cuts it off together with the learners.  Every
  configuration chosen must be one step from the one before it, and only
  the final configuration's servers must converge.
* the nemesis (``faults/nemesis.py``), for ``fault_seconds``: crashes (quick or slow restarts from
  what was persisted), power loss of a majority or of all nodes, partitions
  of any shape (halves, one-way, a bridge node, random links), deposing the
  leader (cutting it off for longer than the shortest election timeout and
  shorter than its quorum timeout, so two leaders meet when it heals, its
  clients mostly cut off with it and reading from it), slow acknowledgements
  (the followers' streams to the leader slowed by about an election, then
  the leader's to them cut: a rival is elected while the acknowledgements
  of the old leader's last heartbeats trickle in), splits of an even number
  of voters in equal halves, process stalls (piled-up work runs in random
  order on resume), the leader's crash with every other server stalled
  until one instant (they campaign at once, with ballots of the same
  round), and forged
  peer messages (``Forger``, ``forger.py``: malformed, out of range, oversized, from
  another cluster or a non-member, ballots far above any seen, accepts
  beyond the window, unsolicited catch-up replies, another member's
  messages), each on a stream opened with some server's certificate, and
  each of which must be refused by the ingress, the codec or the core.  In most seeds, also lost disks
  (``faults/disks.py``): a voter's disk, snapshots and incarnation
  book are wiped and it is restarted with its usual command, so it runs the
  founding check (paxos/incarnation.py) on what the others recorded; a
  minority at most, one at a time.  One that is refused stays down and is
  removed from the configuration, as its operator would.  Each seed
  mixes these in its own proportions (swarm testing).  Then everything
  heals, every node is up, faults stop, and the liveness phase starts.

Checked (``checks.py``), with the seed and a timeline of the events that
matter on failure (``trace.py``):

* safety: no two nodes ever learn different values for a slot (every
  ``Ready.committed`` is compared with the first value learned there, which
  also makes every applied sequence a prefix of the longest); every
  acknowledged write took effect in the final log; every node ends with the
  data that replaying the log gives;
* the client history is linearizable;
* liveness: after the heal, every pending operation and one more write and
  read per client complete within ``LIVENESS_US`` of simulated time, and all
  nodes converge to the same applied index;
* no honest message is refused (by the peer ingress at all, by the core
  except the kinds an honest cluster can cause, see ``HONEST_REFUSALS``),
  and every forged one is;
* the core's invariants, after each of its steps on every server
  (``Config.check_invariants``): one that does not hold ends the run with
  an ``invariant`` violation;
* at every step (``stepchecks.py``): every vote a server sends is durable
  on its disk as it leaves (``durability``), no acceptor votes below a
  promise it made and every ballot names its proposer and leads once
  (``ballot-order``), and a leader answering a read under its lease is the
  only leader and knows every chosen slot (``lease``).

``run.py`` holds ``Simulation`` (the random source, simulated time and the
event queue its parts schedule on), ``run_seed`` and ``run_many``;
``cli.py`` the command line.  Everything is re-exported here.

Planted bugs (``--bug NAME``, see ``ALL_BUGS`` and ``bugs.py``) prove that
these checks bite.  The core's (``paxos.consensus.planted.PlantedBug``, among
them compaction that forgets accepted values above the commit index and a
leader that proposes a membership change while its last is unfinished) are
switched on through its ``Config``; the others (``HostBug``) are planted from
outside the shipped code: a disk that lets a bundle's votes out before
their fsync, one that acknowledges an fsync before it is durable or
writes snapshots without the client-session table, a state
machine that evicts sessions of its own choosing, hosts that skip the
incarnation check (a server that lost its disk founds anew without asking),
a replica that installs a fetched snapshot older than its state, a peer
ingress that does not hold a member's certificate to the sender its
messages claim, and hosts that do not follow the configuration an
installed snapshot holds.
"""

from __future__ import annotations

from tests.sim.bugs import (
    ALL_BUGS,
    HOST_BUGS,
    SKIPPED_INCARNATION,
    Bug,
    CertificateBlindIngress,
    ForgetfulStateMachine,
    HostBug,
    OlderSnapshotReplica,
    planted,
)
from tests.sim.checks import (
    CONVERGENCE_POLL_US,
    LIVENESS_US,
    Checks,
    describe_op,
    first_nonlinearizable_moment,
)
from tests.sim.cli import main
from tests.sim.clients import CLIENT_TIMING, SERVER_REQUEST_US, Client, ClientOp, status_name
from tests.sim.disk import SimDisk, thaw
from tests.sim.faults.disks import LOSE_DISK_GAP_US, LOSE_DISK_SEEDS, LOSE_DISK_STAGED, DiskLoss
from tests.sim.faults.membership import Reconfiguration
from tests.sim.faults.nemesis import Nemesis
from tests.sim.forger import Forger, Forgery
from tests.sim.host import STALE_SNAPSHOT, Host
from tests.sim.network import DEADLINE, RECONNECT_US, REFUSED, RESET, Network, Request
from tests.sim.profile import LEASE_BOUND_DRIFT, Profile
from tests.sim.run import DEFAULT_FAULT_SECONDS, DEFAULT_NODES, Simulation, run_many, run_seed
from tests.sim.stepchecks import StepChecks
from tests.sim.trace import (
    TIMELINE_LINES,
    Event,
    RunResult,
    SimulationStop,
    Violation,
    command_names,
    describe_message,
    describe_record,
    describe_value,
    timeline,
)
from tests.sim.units import (
    MS,
    SECOND,
    SIM_CLUSTER_ID,
    TICK_JITTER_US,
    TICK_US,
    fmt_time,
    sim_address,
    sim_name,
    sim_origin,
)

__all__ = [
    "ALL_BUGS",
    "CLIENT_TIMING",
    "CONVERGENCE_POLL_US",
    "DEADLINE",
    "DEFAULT_FAULT_SECONDS",
    "DEFAULT_NODES",
    "HOST_BUGS",
    "LEASE_BOUND_DRIFT",
    "LIVENESS_US",
    "LOSE_DISK_GAP_US",
    "LOSE_DISK_SEEDS",
    "LOSE_DISK_STAGED",
    "MS",
    "RECONNECT_US",
    "REFUSED",
    "RESET",
    "SECOND",
    "SERVER_REQUEST_US",
    "SIM_CLUSTER_ID",
    "SKIPPED_INCARNATION",
    "STALE_SNAPSHOT",
    "TICK_JITTER_US",
    "TICK_US",
    "TIMELINE_LINES",
    "Bug",
    "CertificateBlindIngress",
    "Checks",
    "Client",
    "ClientOp",
    "DiskLoss",
    "Event",
    "Forger",
    "Forgery",
    "ForgetfulStateMachine",
    "Host",
    "HostBug",
    "Nemesis",
    "Network",
    "OlderSnapshotReplica",
    "Profile",
    "Reconfiguration",
    "Request",
    "RunResult",
    "SimDisk",
    "Simulation",
    "SimulationStop",
    "StepChecks",
    "Violation",
    "command_names",
    "describe_message",
    "describe_op",
    "describe_record",
    "describe_value",
    "first_nonlinearizable_moment",
    "fmt_time",
    "main",
    "planted",
    "run_many",
    "run_seed",
    "sim_address",
    "sim_name",
    "sim_origin",
    "status_name",
    "thaw",
    "timeline",
]
