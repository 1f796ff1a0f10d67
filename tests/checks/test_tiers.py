"""The test tiers hold together: one folder and one registered marker each, and test modules apart.

The table is tests/harness/tiers.py; tests/conftest.py marks by it and
refuses a test module outside every tier folder.  What it cannot see is
checked here: the markers pyproject.toml registers, the folders themselves,
and that no test module imports another (shared code lives in tests/harness/
or a conftest.py).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.harness.tiers import TESTS, TIER_FOLDERS, tier_of

ROOT = TESTS.parent


def _test_modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("test_*.py") if "__pycache__" not in path.parts)


def test_pyproject_registers_one_marker_per_tier() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    registered = [line.split(":")[0] for line in options["markers"]]
    assert registered == list(TIER_FOLDERS)
    assert "--strict-markers" in options["addopts"]


def test_every_tier_is_a_package_of_test_modules() -> None:
    for tier in TIER_FOLDERS:
        folder = TESTS / tier
        assert (folder / "__init__.py").is_file(), f"tests/{tier}/ is not a package"
        assert list(folder.glob("test_*.py")), f"tests/{tier}/ holds no test module"


def test_every_test_module_is_in_a_tier_folder() -> None:
    assert [str(path.relative_to(ROOT)) for path in _test_modules() if tier_of(path) is None] == []


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in _test_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            imported = [name for name in names if name.rpartition(".")[2].startswith("test_")]
            offenders += [f"{path.relative_to(ROOT)} imports {name}" for name in imported]
    assert offenders == []
