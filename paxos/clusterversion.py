"""What the members say they can run, and when that lets the leader raise the cluster version.

Every peer message carries the highest cluster version its sender's release
runs (``PeerMessage.max_cluster_version``; 0 from a release before cluster
versions, which runs 1).  The replica hands each report to
``VersionReports``; the leader asks ``raise_to`` on its ticks and proposes
a ``RaiseClusterVersion`` when it names a version.  The raise needs every
member of the configuration, learners included (they apply the log too),
to have reported recently: a member that is down, or one whose release
cannot run the new version, holds the raise back.  A report too old does
not count, so a member replaced by an older release while silent is not
taken for the newer one it was.

Pure code: no I/O or clock of its own (the caller passes ``now``), so the
gRPC server and the simulator both run it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from paxos.common import limits, versions
from paxos.consensus.messages import NodeId


@dataclass(frozen=True, slots=True)
class Report:
    max_version: int  # what the member can run (0 on the wire already read as 1)
    at: float  # when it was heard, on the replica's clock


class VersionReports:
    """The newest report of each member; see the module docstring."""

    def __init__(self, window: float = limits.VERSION_REPORT_SECONDS) -> None:
        self.window = window
        self._reports: dict[NodeId, Report] = {}

    def heard(self, member: NodeId, max_cluster_version: int, now: float) -> None:
        """``member``'s message said it runs up to ``max_cluster_version`` (0: none said, so 1)."""
        self._reports[member] = Report(versions.reported(max_cluster_version), now)

    def reported(self, member: NodeId) -> Report | None:
        return self._reports.get(member)

    def raise_to(self, members: Iterable[NodeId], me: NodeId, own_max: int, current: int, now: float) -> int | None:
        """The cluster version to raise to now, or None.

        The lowest that every member of ``members`` can run (``me`` counts
        as ``own_max``), when every other member reported within the window
        and that is above ``current``.
        """
        lowest = own_max
        for member in members:
            if member == me:
                continue
            report = self._reports.get(member)
            if report is None or now - report.at > self.window:
                return None
            lowest = min(lowest, report.max_version)
        return lowest if lowest > current else None
