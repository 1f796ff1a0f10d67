"""Lookup time of paxos.kv.image_index.ImageIndex at the chosen hash length and threshold.

Run from the repository root:

    python -m benchmarks.image_index_bench                      # print the table
    python -m benchmarks.image_index_bench --write docs/images.md

For each index size the index holds that many uniformly random hashes
(seeded) plus `NEAR_GROUPS` planted photos, each stored as three hashes
within a few bits of each other (like a full frame and its crop variants).
Half the lookups are copies of a planted photo with bits flipped (they must be
found), half are fresh random hashes (nothing is within the threshold). A
sample of lookups is checked against a brute-force scan. Each lookup is timed
by the wall clock and by this thread's CPU time: on a shared machine the
first includes waiting for a CPU, the second does not.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import replace_doc_section
from client.images import DEFAULT_MAX_DISTANCE, HASH_BYTES
from paxos.kv.image_index import ImageIndex

SEED = 20240611
SIZES: tuple[int, ...] = (10_000, 100_000, 300_000)
LOOKUPS = 1_000
NEAR_GROUPS = 500
# Bits flipped between a planted photo's stored hashes (crop variants differ
# by about this much in docs/images.md) and in the edited copies looked up.
VARIANT_FLIPS = 20
QUERY_FLIPS = 30
BRUTE_FORCE_CHECKS = 20
TARGET_MS = 5.0


def _random_hash(rng: random.Random) -> int:
    return rng.getrandbits(8 * HASH_BYTES)


def _flip(rng: random.Random, key: int, bits: int) -> int:
    for position in rng.sample(range(8 * HASH_BYTES), bits):
        key ^= 1 << position
    return key


def _to_bytes(key: int) -> bytes:
    return key.to_bytes(HASH_BYTES, "big")


def build(rng: random.Random, size: int) -> tuple[ImageIndex, list[int]]:
    """Index of `size` random hashes + planted groups; returns it and the groups' bases."""
    index = ImageIndex(HASH_BYTES)
    ref = 0
    for _ in range(size):
        ref += 1
        index.add(_to_bytes(_random_hash(rng)), ref)
    bases = []
    for _ in range(NEAR_GROUPS):
        ref += 1
        base = _random_hash(rng)
        bases.append(base)
        for variant in (base, _flip(rng, base, VARIANT_FLIPS), _flip(rng, base, VARIANT_FLIPS)):
            index.add(_to_bytes(variant), ref)
    return index, bases


def queries(rng: random.Random, bases: list[int]) -> list[tuple[bytes, bool]]:
    """(hash, whether a planted photo must be found), alternating."""
    out = []
    for i in range(LOOKUPS):
        if i % 2 == 0:
            out.append((_to_bytes(_flip(rng, rng.choice(bases), QUERY_FLIPS)), True))
        else:
            out.append((_to_bytes(_random_hash(rng)), False))
    return out


def brute_force(index_items: list[tuple[int, int]], query: bytes, max_distance: int) -> tuple[int, int] | None:
    """(distance, ref) of the best match by scanning every hash, or None."""
    q = int.from_bytes(query, "big")
    hits = [((key ^ q).bit_count(), -ref) for key, ref in index_items if (key ^ q).bit_count() <= max_distance]
    if not hits:
        return None
    d, neg_ref = min(hits)
    return d, -neg_ref


def run(size: int) -> dict[str, float]:
    rng = random.Random(SEED + size)
    started = time.perf_counter()
    index, bases = build(rng, size)
    build_s = time.perf_counter() - started
    lookups = queries(rng, bases)
    wall_ms, cpu_ms, found, false_hits = [], [], 0, 0
    for query, planted in lookups:
        wall0, cpu0 = time.perf_counter_ns(), time.thread_time_ns()
        result = index.nearest(query, DEFAULT_MAX_DISTANCE)
        cpu_ms.append((time.thread_time_ns() - cpu0) / 1e6)
        wall_ms.append((time.perf_counter_ns() - wall0) / 1e6)
        found += planted and bool(result)
        false_hits += (not planted) and bool(result)
    _check_against_brute_force(index, lookups[:BRUTE_FORCE_CHECKS])
    return {
        "size": len(index),
        "chunk_bits": index.chunk_bits,
        "build_s": build_s,
        "median_ms": statistics.median(wall_ms),
        "p99_ms": _p99(wall_ms),
        "cpu_median_ms": statistics.median(cpu_ms),
        "cpu_p99_ms": _p99(cpu_ms),
        "found": found / (LOOKUPS / 2),
        "false_hits": false_hits,
    }


def _p99(samples: list[float]) -> float:
    return sorted(samples)[math.ceil(0.99 * len(samples)) - 1]


def _check_against_brute_force(index: ImageIndex, lookups: list[tuple[bytes, bool]]) -> None:
    items = [(int.from_bytes(h, "big"), ref) for h, ref in index.items()]
    for query, _ in lookups:
        got = index.nearest(query, DEFAULT_MAX_DISTANCE)
        expected = brute_force(items, query, DEFAULT_MAX_DISTANCE)
        assert [(d, ref) for d, _, ref in got[:1]] == ([expected] if expected else []), query.hex()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(sizes: Sequence[int]) -> str:
    lines = [
        f"Hash: {8 * HASH_BYTES} bits, threshold {DEFAULT_MAX_DISTANCE}; {LOOKUPS} lookups per size "
        f"(half planted copies {QUERY_FLIPS} bits away, half random); seed {SEED}.",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; Python {platform.python_version()}; "
        f"load average at start {_load_average()}.",
        "",
        "| stored hashes | chunk bits | build | median lookup | p99 lookup | median CPU | p99 CPU "
        "| planted found | random lookups matched |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        r = run(size)
        lines.append(
            f"| {int(r['size']):,} | {int(r['chunk_bits'])} | {r['build_s']:.1f} s "
            f"| {r['median_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['cpu_median_ms']:.2f} ms "
            f"| {r['cpu_p99_ms']:.2f} ms | {100 * r['found']:.1f}% | {int(r['false_hits'])} |"
        )
    return "\n".join(lines)


def _load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="random hashes per index")
    parser.add_argument("--write", type=Path, metavar="DOC", help="update the generated section of DOC")
    args = parser.parse_args(argv)
    text = report(args.sizes)
    print(text)
    if args.write:
        replace_doc_section(args.write, "image_index_bench", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
