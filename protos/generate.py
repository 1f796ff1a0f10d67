"""Regenerate the Python code for the wire contract: ``python -m protos.generate``.

The generated modules are committed so that a fresh clone works without
grpcio-tools; ``tests/checks/test_protos.py`` fails when they are stale.  Pass
``--out DIR`` to write somewhere else (the staleness test does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ("protos/kv.proto", "protos/log.proto", "protos/peer.proto", "protos/snapshot.proto")


def generate(out: Path) -> None:
    from grpc_tools import protoc  # imported late: only needed to regenerate

    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(ROOT / p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    opts = parser.parse_args(argv)
    generate(opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
