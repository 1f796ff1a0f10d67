"""pyproject.toml pins one gRPC release line, so pip resolves it at once to matching versions."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.version import Version

from tests.harness import PROJECT


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [*project["dependencies"], *(line for extra in project["optional-dependencies"].values() for line in extra)]
    return {(req := Requirement(line)).name.lower(): req for line in lines}


def test_grpc_packages_share_one_release_line() -> None:
    grpc = {name: req.specifier for name, req in requirements().items() if name.startswith("grpcio")}
    assert {"grpcio", "grpcio-tools", "grpcio-health-checking"} <= set(grpc)
    assert len({str(spec) for spec in grpc.values()}) == 1, grpc
    spec = next(iter(grpc.values()))
    allowed = [
        v for v in (Version(f"1.{minor}.{patch}") for minor in range(70, 100) for patch in range(5)) if v in spec
    ]
    assert allowed, spec
    assert len({v.minor for v in allowed}) == 1, (
        f"{spec} admits several release lines: {sorted({v.minor for v in allowed})}"
    )


def test_protobuf_fits_that_line() -> None:
    # grpcio-tools and grpcio-health-checking 1.81 need protobuf >=6.33.5,<7 (1.82 on need >=7.35.1).
    protobuf = requirements()["protobuf"].specifier
    assert Version("6.33.5") in protobuf and Version("6.33.4") not in protobuf and Version("7.0") not in protobuf
