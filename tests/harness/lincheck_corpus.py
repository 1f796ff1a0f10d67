"""Parsers for the linearizability corpus (see its README.md).

Two formats: Jepsen's etcd logs (``jepsen-etcd/*.log``, one register that
starts absent) and Porcupine's key-value logs (``kv/*.txt``, string
registers that start as ""). Both become lists of :class:`lincheck.Op`,
with the line number as the time of each event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.harness.lincheck import Op

JEPSEN_KEY = "register"

_JEPSEN_LINE = re.compile(r"INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s+(.*?)\s*")
_JEPSEN_KINDS = {"read": "get", "write": "set", "cas": "cas"}

_KV_LINE = re.compile(
    r"\{:process\s+(\d+),\s*:type\s+:(\w+),\s*:f\s+:(\w+),\s*"
    r':key\s+"((?:[^"\\]|\\.)*)",\s*:value\s+(nil|"(?:[^"\\]|\\.)*")\}\s*'
)
_KV_KINDS = {"get": "get", "put": "set", "append": "append"}


@dataclass(frozen=True)
class Event:
    """One line of a log: an invocation or a completion."""

    process: int
    type: str  # "invoke" | "ok" | "fail" | "info"
    kind: str  # model kind: "get" | "set" | "cas" | "append"
    key: str
    value: object
    time: int


def pair_events(events: Iterable[Event]) -> list[Op]:
    """Match completions to invocations and build the operations.

    A completion belongs to its process's latest open invocation; an
    invocation left open (a crash, or a new invocation from the same id)
    has an unknown outcome. ``:fail`` means the op did not take effect: a
    failed read observed nothing and is dropped, a failed cas is a completed
    cas that did not swap, any other failed op is dropped as a no-op.
    """
    open_calls: dict[int, Event] = {}
    ops: list[Op] = []
    for ev in events:
        if ev.type == "invoke":
            if ev.process in open_calls:
                ops.append(_op(open_calls.pop(ev.process), None, None))
            open_calls[ev.process] = ev
            continue
        call = open_calls.pop(ev.process, None)
        if call is None or call.kind != ev.kind:
            raise ValueError(f"line {ev.time + 1}: {ev.type} {ev.kind} by process {ev.process} matches no open call")
        op = _complete(call, ev)
        if op is not None:
            ops.append(op)
    ops += [_op(call, None, None) for call in open_calls.values()]
    return ops


def _complete(call: Event, done: Event) -> Op | None:
    if done.type == "info":
        return _op(call, None, None)
    if done.type == "fail":
        return _op(call, done.time, False) if call.kind == "cas" else None
    if done.type != "ok":
        raise ValueError(f"line {done.time + 1}: unknown completion type {done.type!r}")
    if call.kind == "get":
        return _op(call, done.time, done.value)
    return _op(call, done.time, True if call.kind == "cas" else None)


def _op(call: Event, ret: int | None, result: object) -> Op:
    return Op(call.process, call.key, call.kind, call.value, call.time, ret, result)


def parse_jepsen_etcd(text: str, key: str = JEPSEN_KEY) -> list[Op]:
    """Ops of a Jepsen etcd register log; the register starts absent."""
    return pair_events(_jepsen_events(text, key))


def _jepsen_events(text: str, key: str) -> Iterable[Event]:
    for time, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        m = _JEPSEN_LINE.fullmatch(line)
        if m is None or m[3] not in _JEPSEN_KINDS:
            raise ValueError(f"line {time + 1}: not a Jepsen register event: {line!r}")
        process, type_, f, raw = m.groups()
        # Keywords such as :timed-out carry no value.
        value = None if raw.startswith(":") else _jepsen_value(raw, time)
        yield Event(int(process), type_, _JEPSEN_KINDS[f], key, value, time)


def _jepsen_value(raw: str, time: int) -> object:
    if raw == "nil":
        return None
    if raw.startswith("[") and raw.endswith("]"):
        parts = raw[1:-1].split()
        if len(parts) == 2:
            return (_jepsen_value(parts[0], time), _jepsen_value(parts[1], time))
    elif raw.lstrip("-").isdigit():
        return int(raw)
    raise ValueError(f"line {time + 1}: unexpected Jepsen value {raw!r}")


def parse_kv(text: str) -> list[Op]:
    """Ops of a Porcupine key-value log; every key starts as ""."""
    return pair_events(_kv_events(text))


def _kv_events(text: str) -> Iterable[Event]:
    for time, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        m = _KV_LINE.fullmatch(line.strip())
        if m is None or m[3] not in _KV_KINDS:
            raise ValueError(f"line {time + 1}: not a key-value event: {line!r}")
        process, type_, f, key, raw = m.groups()
        value = None if raw == "nil" else _edn_unescape(raw[1:-1])
        yield Event(int(process), type_, _KV_KINDS[f], _edn_unescape(key), value, time)


def _edn_unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


@dataclass(frozen=True)
class CorpusHistory:
    """A parsed corpus file and the value its registers start with."""

    ops: list[Op]
    initial: object


def load_history(path: Path) -> CorpusHistory:
    """Parse one corpus file, choosing the format by its extension."""
    text = path.read_text()
    if path.suffix == ".log":
        return CorpusHistory(parse_jepsen_etcd(text), None)
    if path.suffix == ".txt":
        return CorpusHistory(parse_kv(text), "")
    raise ValueError(f"{path}: unknown corpus format; expected a .log (Jepsen) or .txt (kv) file")


def read_verdicts(corpus: Path) -> list[tuple[str, bool]]:
    """(relative path, linearizable) for each line of verdicts.tsv."""
    verdicts = []
    for number, line in enumerate((corpus / "verdicts.tsv").read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, verdict = line.partition("\t")
        if verdict.strip() not in ("true", "false"):
            raise ValueError(f"verdicts.tsv line {number}: expected 'path<TAB>true|false', got {line!r}")
        verdicts.append((name.strip(), verdict.strip() == "true"))
    return verdicts
