"""The test tiers, cheapest first: one folder of tests/ each, and a pytest marker of the same name.

tests/conftest.py marks every test with its folder's tier and refuses a test
module that lies in no tier folder; pyproject.toml registers the markers.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import TESTS

TIER_FOLDERS: dict[str, str] = {
    "unit": "pure tests: no server, no subprocess, no Docker; the fast tier",
    "checks": "static checks of the tree: lint, mypy, import contracts, pins, generated protos",
    "simulation": "the deterministic whole-cluster simulator, run over many seeds",
    "inprocess": "real servers on an event loop in the test's own process",
    "processes": "real server processes, and the commands run as subprocesses",
    "docker": "the images and a cluster on a real Docker engine",
}


def tier_of(path: Path) -> str | None:
    """The tier of a file under tests/, from its first folder; None outside every tier folder."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIER_FOLDERS else None
