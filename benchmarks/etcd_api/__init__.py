"""A minimal client of etcd's v3 gRPC API, for benchmarks only.

``etcd_kv.proto`` beside this file is a subset of etcd's own protos with the
same package and field numbers.  ``load_stubs()`` compiles it with grpc_tools
(the ``test`` extra) into a temporary directory and imports the result, so the
generated code is never stale and never committed.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).resolve().parent / "etcd_kv.proto"
_MODULE = "etcd_kv_pb2"


class StubError(RuntimeError):
    """The etcd stubs could not be generated."""


def load_stubs() -> tuple[ModuleType, ModuleType]:
    """Generate and import (etcd_kv_pb2, etcd_kv_pb2_grpc); cached after the first call."""
    if _MODULE in sys.modules:
        return sys.modules[_MODULE], sys.modules[_MODULE + "_grpc"]
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise StubError("grpcio-tools is missing: pip install -e '.[test]'") from exc
    out = Path(tempfile.mkdtemp(prefix="etcd-stubs-"))
    try:
        args = ["protoc", f"-I{PROTO.parent}", f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)]
        if protoc.main(args) != 0:
            raise StubError(f"protoc failed on {PROTO}")
        # The generated *_grpc module imports its sibling by top-level name.
        sys.path.insert(0, str(out))
        try:
            pb2 = importlib.import_module(_MODULE)
            pb2_grpc = importlib.import_module(_MODULE + "_grpc")
        finally:
            sys.path.remove(str(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return pb2, pb2_grpc
