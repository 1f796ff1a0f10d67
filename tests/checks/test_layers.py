"""The layers of docs/architecture.md hold: contracts kept, and no import circle.

The contracts are in pyproject.toml ([tool.importlinter]); they are checked
here on the tree, and once on a copy with a forbidden import planted, to
show that they bite.  Circles are found on grimp's graph, which counts
imports inside functions and under ``TYPE_CHECKING`` like any other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import PROJECT

grimp = pytest.importorskip("grimp", reason="import-linter is not installed (pip install -e '.[test]')")

PACKAGES = ("paxos", "client", "protos", "tools")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.skip(f"{LINT_IMPORTS} is missing (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_layer_contracts_are_kept() -> None:
    result = _lint_imports(PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("paxos/consensus/quorum.py", "import grpc", "the consensus core is sans-I/O"),
        ("paxos/kv/statemachine.py", "from paxos.server import service", "each layer imports only the layers below it"),
        ("client/retry.py", "from paxos.storage import wal", "the client imports no server code"),
        ("paxos/replica.py", "from protos import kv_pb2", "the replica does not handle the client API's messages"),
        ("paxos/server/service.py", "import tools.localcluster", "paxos needs no operator tools"),
        ("tools/bench.py", "from paxos.server import kvapi", "the operator's tools import no server code"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, planted: str, contract: str) -> None:
    for name in (*PACKAGES, "pyproject.toml"):
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    # A contract with ignored imports reports "BROKEN (2 ignored imports)".
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout


def _circles() -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    graph = grimp.build_graph(*PACKAGES)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_import_circle() -> None:
    circles = _circles()
    assert not circles, f"import circles: {[sorted(c) for c in circles]}"
