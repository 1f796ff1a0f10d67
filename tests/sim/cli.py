"""``python -m tests.sim``: replay one seed with its timeline, or run many and summarise."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from tests.sim.bugs import ALL_BUGS
from tests.sim.run import DEFAULT_FAULT_SECONDS, DEFAULT_NODES, run_many, run_seed
from tests.sim.trace import RunResult, timeline
from tests.sim.units import fmt_time

DESCRIPTION = "Deterministic simulation of a whole paxoskv cluster, FoundationDB style."


def _parse_nodes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(size < 3 for size in sizes):
        raise argparse.ArgumentTypeError(f"wants cluster sizes of 3 or more like 3,5,7, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=DESCRIPTION)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--seed", type=int, help="replay one seed and print its timeline on failure")
    what.add_argument("--seeds", type=int, help="run this many seeds and print a summary")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds (default 0)")
    parser.add_argument("--nodes", type=_parse_nodes, default=DEFAULT_NODES, help="cluster sizes to draw from")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(ALL_BUGS), help="plant a bug")
    parser.add_argument("--fault-seconds", type=float, default=DEFAULT_FAULT_SECONDS, help="simulated fault phase")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for --seeds")
    parser.add_argument("--first-failure", action="store_true", help="with --seeds: stop at the first failing seed")
    parser.add_argument("--timeline", action="store_true", help="print the timeline of faults, roles and clients")
    parser.add_argument("--verbose", action="store_true", help="print the whole trace, messages included")
    args = parser.parse_args(argv)
    if args.seed is not None:
        return _replay(args)
    return _many(args)


def _replay(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    result = run_seed(args.seed, args.nodes, args.bug, args.fault_seconds, verbose=args.verbose)
    took = time.perf_counter() - started
    if args.verbose or args.timeline or not result.ok:
        print("\n".join(timeline(result, everything=args.verbose or args.timeline)))
        print()
    for v in result.violations:
        print(f"{v.kind} violation at {fmt_time(v.time).strip()}:\n{v.message}\n")
    stats = ", ".join(f"{k}={v}" for k, v in result.stats.items())
    bugs = f", planted {', '.join(result.bugs)}" if result.bugs else ""
    print(f"seed {result.seed}: {'ok' if result.ok else 'FAIL'} ({result.nodes} nodes{bugs}) digest {result.digest}")
    print(f"  {stats}")
    print(f"  {took:.2f}s wall clock")
    return 0 if result.ok else 1


def _many(args: argparse.Namespace) -> int:
    seeds = range(args.start, args.start + args.seeds)
    started = time.perf_counter()
    failures: list[RunResult] = []

    def progress(result: RunResult) -> None:
        if not result.ok:
            failures.append(result)
            print(result.summary().splitlines()[0], flush=True)

    results = run_many(
        seeds, args.nodes, args.bug, args.fault_seconds, args.jobs, args.first_failure, progress=progress
    )
    took = time.perf_counter() - started
    by_size: dict[int, int] = {}
    for r in results:
        by_size[r.nodes] = by_size.get(r.nodes, 0) + 1
    sizes = ", ".join(f"{count} x {size} nodes" for size, count in sorted(by_size.items()))
    print(
        f"\n{len(results)} seeds run ({sizes}) in {took:.1f}s, {100 * took / max(len(results), 1):.1f}s per 100 seeds"
    )
    if failures:
        print(f"{len(failures)} failed: {' '.join(str(r.seed) for r in failures)}")
        flags = "".join(f" --bug {b}" for b in args.bug)
        if tuple(args.nodes) != DEFAULT_NODES:
            flags += " --nodes " + ",".join(map(str, args.nodes))
        if args.fault_seconds != DEFAULT_FAULT_SECONDS:
            flags += f" --fault-seconds {args.fault_seconds:g}"
        print(f"replay one with: python -m tests.sim --seed {failures[0].seed}{flags}")
        return 1
    print("no failures")
    return 0
