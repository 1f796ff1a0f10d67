"""The paxoskv client library: ``KVClient``, the blocking client.

``KVClient`` finds the leader itself (following the redirects of followers),
retries through leader changes until its timeout, and tags each write with
its session's id (registered with the cluster before the first write) and a
sequence number so that a retried write is applied at most once.  It is
safe to share between threads.  It is a synchronous facade: every call is
made by ``client.aio.AsyncKVClient``, which ``KVClient`` runs on an event
loop of its own, and which coroutines may use directly.  Where to send each
attempt, how long to wait and when to give up is decided by ``client.retry``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from client.aio import BACKUP_SECONDS, AsyncKVClient
from client.errors import InvalidRequest, KVError, SessionExpired, Unavailable, UnknownOutcome
from client.members import SYNC_SECONDS
from client.members import Member as ClusterMember
from client.outcomes import classify
from client.results import ImageMatch
from paxos.common.hostfile import Member, parse_hostfile
from paxos.common.limits import DEFAULT_MAX_VALUE_BYTES
from paxos.common.tlsfiles import find_tls_dir

if TYPE_CHECKING:
    # client.images pulls in numpy, scipy and imagehash (a third of a second): only iset and
    # inearest import it, so that every other command starts quickly.
    from client.images import ImageSource

# ``classify`` is here for the load generator, which imported it from this module first.
__all__ = [
    "ImageMatch",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "SessionExpired",
    "Unavailable",
    "UnknownOutcome",
    "classify",
]

# How long closing a client waits for its streams to end.
_CLOSE_SECONDS = 5.0

T = TypeVar("T")


class KVClient:
    """The blocking client: ``AsyncKVClient``'s calls, made from any thread.

    It runs an ``AsyncKVClient`` on the process's client event loop (a
    daemon thread started by the first call of any ``KVClient``), so that
    calls from many threads are coalesced on one session stream per server
    just as concurrent coroutines are.  Safe to share between threads.

    With ``tls_dir`` it presents the directory's client.pem, and for the
    calls that change the members or take a backup its admin.pem when the
    directory has it (servers under TLS refuse those calls to client.pem).
    """

    def __init__(
        self,
        members: list[Member],
        timeout: float = 10.0,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        tls_dir: str | Path | None = None,
    ) -> None:
        self._client = AsyncKVClient(members, timeout, max_value_bytes, tls_dir=tls_dir)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by the first call

    @property
    def servers(self) -> list[Member]:
        """The servers this client sends to: those it was given, then members it learned from the cluster."""
        return self._client.servers

    @property
    def timeout(self) -> float:
        return self._client.timeout

    @property
    def max_value_bytes(self) -> int:
        return self._client.max_value_bytes

    @property
    def session_id(self) -> int | None:
        """The session this client's writes go in (registered before its first write), or None."""
        return self._client.session_id

    @property
    def tls_dir(self) -> str | Path | None:
        """The TLS directory this client uses (its ca.pem and client.pem), or None for plaintext."""
        return self._client.tls_dir

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
            loop, self._loop = self._loop, None
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), loop).result(_CLOSE_SECONDS)

    # ------------------------------------------------------------- the API

    def set(self, key: str, value: str) -> None:
        self._run(self._client.set(key, value))

    def delete(self, key: str) -> bool:
        return self._run(self._client.delete(key))

    def get(self, key: str, consistency: str = "linearizable") -> str | None:
        """The value of ``key``, or None.

        ``consistency="local"`` reads whichever server answers first, without
        asking the leader: fast, but the value may be stale.
        """
        return self._run(self._client.get(key, consistency))

    def iset(self, image: ImageSource, metadata: str) -> str:
        """Store ``metadata`` for a photo (a path or the file's bytes); returns its hash in hex.

        Raises ``ImageError`` (a ValueError) for a file that is missing, not
        an image, corrupt or too large, before anything is sent.
        """
        return self._run(self._client.iset(image, metadata))

    def iget(
        self, image: ImageSource, max_distance: int | None = None, consistency: str = "linearizable"
    ) -> str | None:
        """The metadata of the stored photo nearest to ``image``, or None.

        Only photos within ``max_distance`` bits (default
        ``images.DEFAULT_MAX_DISTANCE``) count; ties go to the latest iset.
        """
        return self._run(self._client.iget(image, max_distance, consistency))

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
        return self._run(self._client.inearest(image, limit, max_distance, consistency))

    def backup(
        self,
        path: str | Path,
        progress: Callable[[int, int], None] | None = None,
        timeout: float = BACKUP_SECONDS,
    ) -> int:
        """Write a consistent snapshot of the cluster to ``path``; the slot it covers.

        The leader takes it at a linearizable point: it holds every write
        acknowledged before the call.  ``progress(bytes_so_far, estimate)``
        is called as data arrives (on the client's own thread).  The file
        appears whole or not at all, and is checked before it does;
        ``timeout`` bounds the transfer.
        """
        return self._run(self._client.backup(path, progress, timeout))

    def status(self) -> list[dict[str, object]]:
        """One entry per server in hostfile order; unreachable ones are 'down'."""
        return self._run(self._client.status())

    # -------------------------------------------------------- membership

    def members(self) -> list[ClusterMember]:
        """The cluster's configuration, in name order, as the leader knows it.

        Follows the redirects of followers; when no server says it leads, the
        first answer's view (a follower's may lag behind a change).  Members
        this client did not know join the servers it sends to, so a client
        with an old hostfile keeps working while one server it lists is up.
        """
        return self._run(self._client.members())

    def add_member(self, name: str, address: str) -> list[ClusterMember]:
        """Add the server at ``address`` (``host:port``) to the cluster as learner ``name``.

        The server must be running, started with ``--join`` and this
        cluster's hostfile: its status must say it is joining this cluster,
        and gives the member id sent with the change.  ``InvalidRequest`` for
        a name or address already in the configuration, or a server that is
        not waiting to join this cluster.  Returns the configuration after.
        """
        return self._run(self._client.add_member(name, address))

    def promote_member(self, name: str) -> list[ClusterMember]:
        """Make learner ``name`` a voter; the leader refuses (``InvalidRequest``) while it is too far behind."""
        return self._run(self._client.promote_member(name))

    def remove_member(self, name: str) -> list[ClusterMember]:
        """Remove member ``name`` (the leader included: it hands over).

        ``InvalidRequest`` for an unknown name, the last voter, or when the
        voters left that answer their status now could not form a quorum.
        """
        return self._run(self._client.remove_member(name))

    def sync_members(
        self,
        hostfile: str | Path | Sequence[Member],
        timeout: float = SYNC_SECONDS,
        progress: Callable[[str], None] | None = None,
    ) -> list[ClusterMember]:
        """Change the configuration to exactly the servers of ``hostfile`` (a path or a parsed list), all voters.

        One step at a time, adding before removing: each server the
        hostfile lists and the configuration lacks is added as a learner (it
        must be running with ``--join``), then promoted once it has caught up;
        then each member the hostfile does not list is removed, the leader
        last.  A removal that would leave the voters answering now short of
        a quorum is refused (``InvalidRequest``) before it is asked for.
        ``progress(message)`` hears of each step (on the client's thread).
        Returns the configuration once it matches; raises ``SyncTimeout``
        when it does not within ``timeout`` seconds.  Every step is atomic,
        so the cluster is always left in a valid configuration, and running
        it again goes on from there (or does nothing when in sync).
        """
        return self._run(self._client.sync_members(hostfile, timeout, progress))

    # ----------------------------------------------------------- machinery

    def _run(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run one of the async client's operations on the client loop and wait for it."""
        with self._lock:
            if self._loop is None:
                self._loop = _client_loop()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(operation, loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C): the operation stops too, rather than
            # going on retrying behind the caller's back (a sync_members could run for minutes).
            future.cancel()
            raise


_client_loop_lock = threading.Lock()
_client_loop_of: dict[int, asyncio.AbstractEventLoop] = {}  # by process id: a forked child starts its own


def _client_loop() -> asyncio.AbstractEventLoop:
    """The event loop that every ``KVClient`` of this process runs on, started on first use.

    One loop, never closed: gRPC's asyncio layer serves every loop of a
    process from one completion queue, and a loop closed while its calls
    still have events due makes that queue fail on the other loops' turns
    (seen with grpcio 1.81: calls on live loops then hang to their
    deadline).  One loop also coalesces the calls of all the process's
    clients.
    """
    with _client_loop_lock:
        loop = _client_loop_of.get(os.getpid())
        if loop is None:
            loop = _client_loop_of[os.getpid()] = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="paxoskv-client", daemon=True).start()
        return loop
