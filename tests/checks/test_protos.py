"""The generated code committed in protos/ matches what protos/generate.py makes now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import protos.generate

PROTOS_DIR = Path(protos.generate.ROOT) / "protos"
GENERATED = ("*_pb2.py", "*_pb2_grpc.py", "*_pb2.pyi")


def _generated(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for pattern in GENERATED for p in sorted(directory.glob(pattern))}


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None,
    reason="grpcio-tools is not installed (pip install -e '.[test]'); cannot regenerate protos/ to compare",
)
def test_committed_generated_code_is_not_stale(tmp_path: Path) -> None:
    protos.generate.generate(tmp_path)
    fresh = _generated(tmp_path / "protos")
    committed = _generated(PROTOS_DIR)
    expected = {
        f"{Path(p).stem}{suffix}" for p in protos.generate.PROTOS for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
    }
    assert set(fresh) == expected, "generate() did not produce the expected files"
    assert set(committed) == set(fresh), "protos/ holds generated files without a .proto, or is missing some"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated code in protos/: {', '.join(stale)}; run: python -m protos.generate"
