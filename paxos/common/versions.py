"""Release and cluster versions: what this code is, and what a cluster of it may do.

A *release* is what an operator installs (the package version).  A *cluster
version* is what the members have agreed to run: an integer that only rises,
decided through the log (a ``RaiseClusterVersion`` command, proposed by the
leader once every member reported that it can run it).  Anything an older
member could not read, such as a new log command kind, snapshot content or
peer message, waits behind a ``Feature`` until the cluster version reaches
the one it needs.  Integers, not release strings: the state machine compares
them, and every gate is one comparison.

Cluster versions so far:

1. release 0.1.0 and everything before cluster versions (a log that raised
   nothing runs 1, and a member that reports none can run only 1);
2. release 0.2.0: registered client sessions, incarnations required on every
   peer message, data format 3.

Pure data: every layer may import it, the client included.
"""

from __future__ import annotations

import enum

# The release this tree is; pyproject.toml's version says the same
# (tests/checks asserts that they agree).
RELEASE = "0.2.0"
# What a log that raised nothing runs, and what a member that reports no
# version (a release from before cluster versions) can run.
BASE_CLUSTER_VERSION = 1
# The highest cluster version this release can run.
MAX_CLUSTER_VERSION = 2
# The first release that runs each cluster version, for error messages.
FIRST_RELEASE_OF = {1: "0.1.0", 2: "0.2.0"}

assert BASE_CLUSTER_VERSION <= MAX_CLUSTER_VERSION
assert set(FIRST_RELEASE_OF) == set(range(BASE_CLUSTER_VERSION, MAX_CLUSTER_VERSION + 1))
assert FIRST_RELEASE_OF[MAX_CLUSTER_VERSION] == RELEASE


class Feature(enum.Enum):
    """Something an older member cannot read; its value: (what it is, the cluster version it needs)."""

    REGISTERED_SESSIONS = ("registered client sessions", 2)
    INCARNATIONS_REQUIRED = ("data-dir incarnations on every peer message", 2)
    DATA_FORMAT_3 = ("data format 3", 2)

    @property
    def what(self) -> str:
        return self.value[0]

    @property
    def needs(self) -> int:
        """The cluster version from which it may be used."""
        return int(self.value[1])


for _feature in Feature:
    assert BASE_CLUSTER_VERSION < _feature.needs <= MAX_CLUSTER_VERSION, _feature


def reported(max_cluster_version: int) -> int:
    """The highest cluster version a member can run, from what it reported (0: none, a release before them)."""
    return max_cluster_version or BASE_CLUSTER_VERSION


def release_for(cluster_version: int) -> str:
    """The first release that runs ``cluster_version``, or a description for one this release does not know."""
    return FIRST_RELEASE_OF.get(cluster_version, f"a release newer than {RELEASE}")


def gate_error(feature: Feature, cluster_version: int) -> str | None:
    """Why ``feature`` may not be used while the cluster runs ``cluster_version``, or None when it may.

    The error names the version needed and what the operator can do about
    it, in one line.
    """
    if cluster_version >= feature.needs:
        return None
    return (
        f"using {feature.what} needs cluster version {feature.needs}; this cluster runs {cluster_version} until every "
        f"member runs release {release_for(feature.needs)} or later (status --json shows cluster_version and "
        "each server's max_cluster_version)"
    )


def too_new_error(cluster_version: int) -> str:
    """What a server says when the log raised the cluster version above what this release can run."""
    return (
        f"the cluster runs version {cluster_version}; this release ({RELEASE}) runs at most "
        f"{MAX_CLUSTER_VERSION}: start release {release_for(cluster_version)} or later on this data dir"
    )
