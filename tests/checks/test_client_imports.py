"""Every client command but the image ones starts without numpy, scipy and imagehash (a third of a second)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.harness import PROJECT

HEAVY = ("numpy", "scipy", "imagehash", "PIL", "client.images")


def modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_the_command_line_and_library_do_not_import_image_code() -> None:
    assert modules_after("import client, client.kv, client.cli, client.__main__") == []


def test_a_command_runs_without_image_code(tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("n1 127.0.0.1:1\n")
    code = f"from client import cli\ncli.main(['-h', {str(hostfile)!r}, '--timeout', '0.2', 'get', 'k'])"
    assert modules_after(code) == []


def test_image_code_is_there_when_asked_for() -> None:
    import client
    from client.images import ImageError

    assert client.ImageError is ImageError
    assert {"client.images", "imagehash", "numpy"} <= set(modules_after("from client import ImageError"))


def client_imports() -> dict[str, set[str]]:
    """Each module of client/ and the modules of client/ it imports, anywhere in it.

    Imports inside functions and under ``if TYPE_CHECKING:`` count: they hide
    a circle from the interpreter, not from a reader.  ``from client import x``
    names the module client/x.py when there is one, else the package itself.
    """
    stems = {p.stem for p in (PROJECT / "client").glob("*.py")}

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if not isinstance(node, ast.ImportFrom):
            return []
        base = node.module or ""
        if node.level:  # relative: client/ has no subpackages, so it is relative to client
            base = f"client.{base}" if base else "client"
        return [f"{base}.{a.name}" if base == "client" and a.name in stems else base for a in node.names]

    graph: dict[str, set[str]] = {}
    for stem in stems:
        here = "client" if stem == "__init__" else f"client.{stem}"
        path = PROJECT / "client" / f"{stem}.py"
        names = {t for node in ast.walk(ast.parse(path.read_text(), str(path))) for t in targets(node)}
        graph[here] = {n for n in names if n == "client" or n.startswith("client.")} - {here}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle in ``graph``, each once, as the path that closes it."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                if (members := frozenset(path)) not in seen:
                    seen.add(members)
                    found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each circle from its least module only
                visit([*path, nxt])

    for start in sorted(graph):
        visit([start])
    return found


def test_the_circle_finder_finds_a_circle_through_a_function_level_import() -> None:
    graph = {"client.a": {"client.b"}, "client.b": {"client.c"}, "client.c": {"client.a"}, "client.d": set()}
    assert circles(graph) == [["client.a", "client.b", "client.c", "client.a"]]


def test_no_import_circle_within_client() -> None:
    graph = client_imports()
    assert {"client.aio", "client.kv", "client.retry"} <= set(graph)
    assert "client.aio" in graph["client.kv"]  # the facade over the asyncio client, seen by the parse
    assert circles(graph) == []
