"""What a run records and reports: the timeline, violations, the result, and how values read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

from paxos.consensus.messages import (
    AcceptRecord,
    ChosenRecord,
    CommitRecord,
    Message,
    PromiseRecord,
    Record,
    Slot,
    Value,
)
from paxos.kv.configuration import configuration_in
from paxos.kv.statemachine import session_of
from protos import log_pb2
from tests.sim.units import SECOND, fmt_time

# Printed timeline length on failure (the full trace is --verbose).
TIMELINE_LINES = 250


@dataclass(frozen=True)
class Event:
    """One line of the timeline; ``key``/``slot`` let a failure filter it."""

    time: int
    node: int  # -1 when no node is involved
    kind: str  # fault | role | client | commit | msg | disk | check
    text: str
    key: str | None = None
    slot: int | None = None
    value: Value | None = None  # of a commit, formatted only when printed
    command: str | None = None  # "client#seq" of a write


@dataclass(frozen=True)
class Violation:
    # safety | lost-write | divergence | linearizability | liveness | client | refusal | forgery | invariant | exception
    kind: str
    time: int
    message: str
    key: str | None = None
    slot: int | None = None
    window: tuple[int, int] | None = None
    commands: frozenset[str] = frozenset()  # writes involved: "client#seq"


@dataclass
class RunResult:
    seed: int
    nodes: int
    bugs: tuple[str, ...]
    violations: list[Violation]
    stats: dict[str, int]
    digest: str
    trace: list[Event] = field(default_factory=list)
    # The chosen log, kept with the trace to show what each slot held.
    chosen: dict[Slot, Value] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        if self.ok:
            return f"seed {self.seed}: ok ({self.nodes} nodes)"
        first = self.violations[0]
        return f"seed {self.seed}: FAIL ({self.nodes} nodes) {first.kind} at {fmt_time(first.time)}: {first.message}"


class SimulationStop(Exception):
    """A violation that ends the run at once (safety cannot recover)."""


def _client_write(raw: bytes) -> log_pb2.ClientWrite | None:
    """The client write a log command carries; None for any other kind.

    The simulated leaders encode every command themselves, so it decodes.
    """
    command = log_pb2.LogCommand.FromString(raw)
    match command.WhichOneof("kind"):
        case "client_write":
            return command.client_write
        case None | "configuration" | "register_session" | "raise_cluster_version":
            return None
        case kind:
            raise AssertionError(f"log command kind {kind!r} has no description")


def describe_value(value: Value) -> str:
    if not value:
        return "noop"
    membership = configuration_in(value)
    if membership is not None:
        return f"configuration [{membership.describe()}]"
    parts = []
    for raw in value:
        write = _client_write(raw)
        if write is None:
            parts.append(_other_command(raw))
            continue
        name = f"s{session_of(write)}#{write.seq}"
        match write.WhichOneof("op"):
            case "set":
                parts.append(f"{name} set {write.set.key}={write.set.value}")
            case "delete":
                parts.append(f"{name} delete {write.delete.key}")
            case op:
                parts.append(f"{name} {op}")
    return "[" + ", ".join(parts) + "]"


def _other_command(raw: bytes) -> str:
    """A few words for a log command that is not a client write."""
    command = log_pb2.LogCommand.FromString(raw)
    match command.WhichOneof("kind"):
        case "raise_cluster_version":
            return f"raise cluster version to {command.raise_cluster_version.version}"
        case "register_session":
            return "register session"
        case _:
            return "unknown command"


def command_names(value: Value) -> list[str]:
    names = []
    for raw in value:
        write = _client_write(raw)
        names.append(f"s{session_of(write)}#{write.seq}" if write is not None else "unknown command")
    return names


def describe_record(record: Record) -> str:
    match record:
        case PromiseRecord():
            return f"promise {record.ballot}"
        case AcceptRecord():
            return f"accept {record.slot}@{record.ballot}={describe_value(record.value)}"
        case ChosenRecord():
            return f"chosen {record.slot}={describe_value(record.value)}"
        case CommitRecord():
            return f"commit {record.index}"
        case _:
            assert_never(record)


def describe_message(msg: Message) -> str:
    name = type(msg).__name__
    fields = []
    for attr in msg.__slots__:  # type: ignore[union-attr]
        if attr == "sender":
            continue
        val = getattr(msg, attr)
        if attr == "value":
            val = describe_value(val)
        elif attr == "values":
            val = "(" + ", ".join(describe_value(v) for v in val) + ")"
        elif attr == "accepted":
            val = "(" + ", ".join(f"{e.slot}@{e.ballot}:{describe_value(e.value)}" for e in val) + ")"
        fields.append(f"{attr}={val}")
    return f"{name} " + " ".join(fields)


# ------------------------------------------------------------------ timeline


def timeline(result: RunResult, everything: bool = False) -> list[str]:
    """The events that matter for the first violation, as printable lines."""
    # Final checks log at the time of what they found, after the end.
    events = sorted(result.trace, key=lambda e: e.time)
    if not everything and result.violations:
        v = result.violations[0]
        events = [e for e in events if _matters(e, v)]
    lines = []
    for e in events:
        text = e.text
        if e.kind == "commit" and not text:
            text = f"learned slot {e.slot}" + (f" = {describe_value(e.value)}" if e.value is not None else "")
        who = f"n{e.node}" if e.node >= 0 else "  "
        lines.append(f"{fmt_time(e.time)} {who:>3} {e.kind:<6} {text}")
    if not everything and len(lines) > TIMELINE_LINES:
        omitted = len(lines) - TIMELINE_LINES
        lines = [f"... {omitted} earlier events omitted (--verbose shows everything)", *lines[-TIMELINE_LINES:]]
    return lines


def _matters(e: Event, v: Violation) -> bool:
    if e.kind == "check":
        return True
    start, end = v.window if v.window else (v.time - 3 * SECOND, v.time)
    if not start - SECOND <= e.time <= end:
        return False
    if e.kind in ("fault", "role", "disk"):
        return True
    if e.kind == "client":
        if v.commands:
            return e.command in v.commands
        return v.key is None or e.key == v.key
    if e.kind == "commit":
        return v.slot is not None and e.slot == v.slot
    return False
