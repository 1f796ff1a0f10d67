"""Apply each semantic mutant to a copy of the tree and see whether the tests catch it.

For every mutant (tests/mutation/mutants.py): edit one file of a private copy
of the tree, run the fast tier (``pytest tests/unit -x``), and if that
passes, the simulator's CI budget of seeds with ``--first-failure``; a
failing stage kills the mutant, a stage that outlives its timeout kills it
too (reported as such: a hang is a failure a user would see), and a mutant
both stages pass survives.  The file is restored before the next mutant.

Why a runner of our own rather than mutmut or cosmic-ray: both generate
operator mutants (``<`` to ``<=``, ``+`` to ``-``) by the thousand and then
need their own session database, configuration and test-runner plugins to
get through them, while the point here is a short list of hand-written bugs,
each named after the rule it breaks, and a second stage (the simulator)
that neither knows how to run or report on.  Applying a text replacement to
a copy and running two commands is shorter than adapting either.

The copy is the working tree's tracked files (``git ls-files``) and the
generated protobuf modules, in a temporary directory; the stages run there
with this interpreter and the copy first on the import path, so they import
the mutated code (checked before the baseline), and no bytecode is cached
(a restored file of the same size as its mutant could otherwise reuse the
mutant's).  The copy is made once; the unmutated baseline must pass both
stages first.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.mutation.mutants import MUTANTS, Mutant, by_name

ROOT = Path(__file__).resolve().parents[2]
BEGIN_MARKER = "<!-- mutation-results:begin -->"
END_MARKER = "<!-- mutation-results:end -->"
# With --simulation-only the table goes into a section of its own: what the
# simulator catches without the unit tier's help.
SIMULATION_MARKERS = ("<!-- mutation-simulation:begin -->", "<!-- mutation-simulation:end -->")
DEFAULT_SEEDS = 200  # the simulator's CI budget (tests/simulation)
# A mutant's stage may take this many times the baseline's time, plus the
# grace below, before it counts as a hang.
TIMEOUT_FACTOR = 3.0
TIMEOUT_GRACE_SECONDS = 60.0

_FAILED_TEST = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_FAILED_SEED = re.compile(r"^seed (\d+): FAIL \([^)]*\) (\S+) at", re.MULTILINE)


class MutationError(Exception):
    """The run cannot measure anything: a mutant does not apply, or the baseline fails."""


@dataclass(frozen=True, slots=True)
class StageRun:
    passed: bool
    timed_out: bool
    seconds: float
    output: str
    returncode: int


@dataclass(frozen=True, slots=True)
class Verdict:
    mutant: Mutant
    stage: str  # "unit" or "simulation" when killed, "" when it survived
    killed_by: str
    unit_seconds: float
    simulation_seconds: float = 0.0  # 0 when the unit tier killed it

    @property
    def seconds(self) -> float:
        """From applying the mutant to its kill, or to the end of both stages."""
        return self.unit_seconds + self.simulation_seconds

    @property
    def survived(self) -> bool:
        return not self.stage


# ------------------------------------------------------------- the copy


def tracked_files(root: Path) -> list[str]:
    """The files a copy needs: what git tracks, and the generated protobuf modules."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise MutationError(f"cannot list the tracked files of {root} (a git checkout is needed): {exc}") from None
    names = {name for name in listed.split("\0") if name}
    names |= {str(path.relative_to(root)) for path in (root / "protos").glob("*_pb2*.py")}
    # A tracked file deleted in the working tree is not part of it.
    return sorted(name for name in names if (root / name).is_file())


def copy_tree(root: Path, dest: Path) -> None:
    for name in tracked_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def occurrences(text: str, mutant: Mutant) -> int:
    return text.count(mutant.original)


def check_applies(root: Path, mutant: Mutant) -> str:
    """The file's text; raises MutationError unless the original occurs exactly once."""
    path = root / mutant.path
    if not path.is_file():
        raise MutationError(f"mutant {mutant.name}: {mutant.path} does not exist; update tests/mutation/mutants.py")
    text = path.read_text(encoding="utf-8")
    count = occurrences(text, mutant)
    if count != 1:
        raise MutationError(
            f"mutant {mutant.name}: its original text occurs {count} times in {mutant.path}, not once; "
            "update tests/mutation/mutants.py"
        )
    return text


def apply(root: Path, mutant: Mutant) -> str:
    """Apply ``mutant`` in the tree at ``root``; returns the file's original text, for ``restore``."""
    text = check_applies(root, mutant)
    (root / mutant.path).write_text(text.replace(mutant.original, mutant.replacement), encoding="utf-8")
    return text


def restore(root: Path, mutant: Mutant, text: str) -> None:
    (root / mutant.path).write_text(text, encoding="utf-8")


# ------------------------------------------------------------- the stages


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The copy first on the path, for the stage's own process and for the
    # pytest-xdist and simulator workers it starts.
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # The linearizability corpus lives beside the checkout, not in it
    # (tests/unit/test_lincheck.py): without this the copy's tests of it
    # would skip, and the fast tier would be weaker than the one measured.
    corpus = ROOT.parent / "shared" / "linearizability-corpus"
    if "PAXOSKV_LINCHECK_CORPUS" not in env and corpus.is_dir():
        env["PAXOSKV_LINCHECK_CORPUS"] = str(corpus)
    return env


def run_stage(command: Sequence[str], cwd: Path, timeout: float | None) -> StageRun:
    """Run ``command`` in a process group of its own, killed whole if it outlives ``timeout``."""
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    finally:
        if proc.poll() is None:  # interrupted: leave no workers behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - started
    return StageRun(proc.returncode == 0 and not timed_out, timed_out, seconds, output, proc.returncode)


def unit_command(jobs: int) -> list[str]:
    return [sys.executable, "-m", "pytest", "tests/unit", "-x", "-q", "-p", "no:cacheprovider", "-n", str(jobs)]


def simulation_command(seeds: int, jobs: int) -> list[str]:
    return [sys.executable, "-m", "tests.sim", "--seeds", str(seeds), "--jobs", str(jobs), "--first-failure"]


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def unit_failure(run: StageRun) -> str:
    found = _FAILED_TEST.search(run.output)
    return found.group(1) if found else f"pytest exited {run.returncode}: {_last_line(run.output)}"


def simulation_failure(run: StageRun) -> str:
    found = _FAILED_SEED.search(run.output)
    if found:
        return f"seed {found.group(1)}: {found.group(2)}"
    return f"simulator exited {run.returncode}: {_last_line(run.output)}"


def check_imports_the_copy(copy: Path) -> None:
    """The stages must import the copy's code, not the checkout's (an editable install points there)."""
    probe = "import paxos, tests; print(paxos.__file__); print(tests.__file__)"
    run = run_stage([sys.executable, "-c", probe], copy, 60)
    where = run.output.split()
    if not run.passed or len(where) != 2 or not all(Path(p).resolve().is_relative_to(copy.resolve()) for p in where):
        raise MutationError(f"the copy in {copy} does not import its own code: {run.output.strip()}")


# ------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class Settings:
    seeds: int
    jobs: int
    timeout: float | None  # per stage; None: derived from the baseline
    unit: bool = True  # False: the simulator alone judges each mutant


def measure_baseline(copy: Path, settings: Settings) -> tuple[float, float]:
    """Both stages on the unmutated copy: their times; raises MutationError if either fails."""
    if not settings.unit:
        return 0.0, _baseline_simulation(copy, settings)
    unit = run_stage(unit_command(settings.jobs), copy, settings.timeout)
    # How many tests ran, so that a copy missing some is seen at once.
    print(f"baseline unit tier: {_last_line(unit.output)}", flush=True)
    if not unit.passed:
        raise MutationError(
            f"the unmutated tree fails the unit tier ({unit_failure(unit)}); fix that before measuring mutants\n"
            + _tail(unit.output)
        )
    return unit.seconds, _baseline_simulation(copy, settings)


def _baseline_simulation(copy: Path, settings: Settings) -> float:
    sim = run_stage(simulation_command(settings.seeds, settings.jobs), copy, settings.timeout)
    if not sim.passed:
        raise MutationError(
            f"the unmutated tree fails the simulation ({simulation_failure(sim)}); fix that before measuring "
            "mutants\n" + _tail(sim.output)
        )
    return sim.seconds


def _tail(output: str, lines: int = 30) -> str:
    return "\n".join(output.splitlines()[-lines:])


def _timeout_after(baseline: float, settings: Settings) -> float:
    if settings.timeout is not None:
        return settings.timeout
    return TIMEOUT_FACTOR * baseline + TIMEOUT_GRACE_SECONDS


def judge(copy: Path, mutant: Mutant, settings: Settings, baseline: tuple[float, float]) -> Verdict:
    """Apply ``mutant`` to the copy, run the stages until one kills it, restore the file."""
    original = apply(copy, mutant)
    try:
        unit_timeout, sim_timeout = (_timeout_after(b, settings) for b in baseline)
        unit_seconds = 0.0
        if settings.unit:
            unit = run_stage(unit_command(settings.jobs), copy, unit_timeout)
            unit_seconds = unit.seconds
            if unit.timed_out:
                return Verdict(mutant, "unit", f"timeout: still running after {unit_timeout:.0f}s", unit.seconds)
            if not unit.passed:
                return Verdict(mutant, "unit", unit_failure(unit), unit.seconds)
        sim = run_stage(simulation_command(settings.seeds, settings.jobs), copy, sim_timeout)
        if sim.timed_out:
            why = f"timeout: still running after {sim_timeout:.0f}s"
            return Verdict(mutant, "simulation", why, unit_seconds, sim.seconds)
        if not sim.passed:
            return Verdict(mutant, "simulation", simulation_failure(sim), unit_seconds, sim.seconds)
        return Verdict(mutant, "", "", unit_seconds, sim.seconds)
    finally:
        restore(copy, mutant, original)


def describe(verdict: Verdict) -> str:
    ran = [
        (name, seconds)
        for name, seconds in (("unit", verdict.unit_seconds), ("simulation", verdict.simulation_seconds))
        if seconds
    ]
    stages = " + ".join(f"{name} {seconds:.1f}s" for name, seconds in ran)
    if verdict.survived:
        return f"SURVIVED ({stages})"
    return f"killed in the {verdict.stage} stage by {verdict.killed_by} ({stages})"


# ------------------------------------------------------------- the report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _commit(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " with uncommitted changes"
    return commit


def _baseline_times(baseline: tuple[float, float]) -> str:
    unit, sim = baseline
    return (f"unit tier {unit:.1f}s, " if unit else "unit tier not run, ") + f"simulation {sim:.1f}s"


def report_table(
    verdicts: Sequence[Verdict], command: str, commit: str, baseline: tuple[float, float], when: datetime
) -> str:
    killed = sum(1 for v in verdicts if not v.survived)
    lines = [
        f"`{command}`, run {when:%Y-%m-%d %H:%M} UTC on commit `{commit}`: "
        f"{killed} of {len(verdicts)} mutants killed, {len(verdicts) - killed} survived. "
        f"Baseline (unmutated): {_baseline_times(baseline)}.",
        "",
        "| mutant | file | rule it breaks | killed by | time to kill |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        if v.survived:
            by, took = "**SURVIVED**", f"({v.unit_seconds:.1f}s + {v.simulation_seconds:.1f}s)"
        else:
            by, took = f"{v.stage}: `{_cell(v.killed_by)}`", f"{v.seconds:.1f}s"
        lines.append(f"| `{v.mutant.name}` | `{v.mutant.path}` | {_cell(v.mutant.rule)} | {by} | {took} |")
    return "\n".join(lines)


def write_report(path: Path, table: str, markers: tuple[str, str] = (BEGIN_MARKER, END_MARKER)) -> None:
    text = path.read_text(encoding="utf-8")
    begin_marker, end_marker = markers
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        raise MutationError(f"{path} has no {begin_marker} ... {end_marker} section for the results")
    head, tail = text[: begin + len(begin_marker)], text[end:]
    path.write_text(f"{head}\n{table}\n{tail}", encoding="utf-8")


def _check_report_target(path: Path, markers: tuple[str, str] = (BEGIN_MARKER, END_MARKER)) -> None:
    if not path.is_file():
        raise MutationError(f"{path} does not exist")
    text = path.read_text(encoding="utf-8")
    if any(marker not in text for marker in markers):
        raise MutationError(f"{path} has no {markers[0]} ... {markers[1]} section for the results")


# ------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation",
        description="Apply each semantic mutant to a copy of the tree and run the unit tier, then the simulator.",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and the rules they break, and exit")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"simulator seeds (default {DEFAULT_SEEDS})")
    parser.add_argument("--jobs", type=int, default=2, help="pytest and simulator workers (default 2)")
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"seconds a stage may run before the mutant counts as a hang (default {TIMEOUT_FACTOR:g} times "
        f"the baseline's plus {TIMEOUT_GRACE_SECONDS:g})",
    )
    parser.add_argument(
        "--simulation-only",
        action="store_true",
        help="skip the unit tier: judge each mutant by the simulator alone (its report goes into a section of its own)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="write the result table into PATH (docs/evidence.md) between markers",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:<40} {m.path:<30} {m.rule}")
        return 0
    try:
        return _run(args, argv)
    except MutationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    known = by_name()
    unknown = [name for name in args.only or () if name not in known]
    if unknown:
        raise MutationError(f"no mutant named {', '.join(unknown)} (see --list)")
    chosen = [known[name] for name in dict.fromkeys(args.only)] if args.only else list(MUTANTS)
    if args.seeds < 1 or args.jobs < 1 or (args.timeout is not None and args.timeout <= 0):
        raise MutationError("--seeds, --jobs and --timeout must be positive")
    markers = SIMULATION_MARKERS if args.simulation_only else (BEGIN_MARKER, END_MARKER)
    if args.report is not None:
        _check_report_target(args.report, markers)
    for mutant in chosen:  # before the baseline: a mutant that no longer applies is found at once
        check_applies(ROOT, mutant)
    settings = Settings(args.seeds, args.jobs, args.timeout, unit=not args.simulation_only)
    with tempfile.TemporaryDirectory(prefix="paxoskv-mutants-") as tmp:
        copy = Path(tmp)
        copy_tree(ROOT, copy)
        check_imports_the_copy(copy)
        stages = f"{settings.seeds} seeds" if args.simulation_only else f"unit tier and {settings.seeds} seeds"
        print(f"baseline: {stages} on the unmutated copy in {copy} ...", flush=True)
        baseline = measure_baseline(copy, settings)
        print(f"baseline passed: {_baseline_times(baseline)}", flush=True)
        verdicts = []
        for number, mutant in enumerate(chosen, 1):
            verdict = judge(copy, mutant, settings, baseline)
            verdicts.append(verdict)
            print(f"[{number}/{len(chosen)}] {mutant.name}: {describe(verdict)}", flush=True)
    survivors = [v.mutant.name for v in verdicts if v.survived]
    print(f"\n{len(verdicts) - len(survivors)} of {len(verdicts)} mutants killed", end="")
    print(f"; survived: {' '.join(survivors)}" if survivors else "")
    if args.report is not None:
        command = "python -m tests.mutation" + "".join(f" {shlex.quote(a)}" for a in argv)
        table = report_table(verdicts, command, _commit(ROOT), baseline, datetime.now(UTC))
        write_report(args.report, table, markers)
        print(f"results written to {args.report}")
    return 1 if survivors else 0
