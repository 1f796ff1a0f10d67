"""The release this tree says it is: pyproject.toml's version and paxos/common/versions.py agree."""

from __future__ import annotations

import tomllib

from paxos.common import versions
from tests.harness import PROJECT


def test_pyproject_version_is_the_release() -> None:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == versions.RELEASE


def test_the_release_runs_the_newest_cluster_version_it_names() -> None:
    # A release that raises MAX_CLUSTER_VERSION is the first to run it.
    assert versions.release_for(versions.MAX_CLUSTER_VERSION) == versions.RELEASE
