"""Linearizability checker for key-value histories.

The search is Wing & Gong's, made iterative and memoised as in Lowe's
"Testing for linearizability" (2017): a configuration is the set of
operations already linearized (a bitset) plus the model state, and a
configuration that was explored once is never explored again. Keys are
independent registers, so each key's sub-history is checked on its own
(P-compositionality); that keeps the bitsets short and the search small.

An operation whose outcome is unknown (``ret is None``: the client timed out
or crashed) may have taken effect at any moment after its call, or never.
It therefore has no return event to bound it, its observed result is not
checked, and the search succeeds as soon as every *completed* operation is
linearized: the unknown ones left over are the ones that never took effect.

The sequential model is a plain function ``step(state, op) -> (ok, state)``
so other data types can be checked by passing a different ``step``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

KINDS = frozenset({"set", "get", "delete", "cas", "append"})

# Model steps spent shrinking a failing key's history to a short witness.
# Shrinking re-runs the search on many windows; past this limit the smallest
# window found so far is reported, so a hard history cannot stall a test.
WITNESS_BUDGET = 200_000

# Model steps one key's search takes before the next key gets its turn.
SEARCH_SLICE = 20_000


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on one key, as observed by the client."""

    process: object  # client/process id
    key: str
    kind: str  # "set" | "get" | "delete" | "cas" | "append"
    arg: object  # value, (old, new) for cas, suffix for append, None otherwise
    call: float  # invocation time (any monotonic number)
    ret: float | None  # completion time; None = outcome unknown
    result: object = None  # observed result for completed ops


StepFn = Callable[[object, Op], tuple[bool, object]]


def kv_step(state: object, op: Op) -> tuple[bool, object]:
    """Sequential spec of one key: ``state`` is the value, None when absent.

    An unknown-outcome op (``ret is None``) is never rejected for its result,
    because nobody observed one; it still changes the state as it would have.
    """
    kind = op.kind
    checked = op.ret is not None
    if kind == "get":
        return (not checked or op.result == state), state
    if kind == "set":
        return True, op.arg
    if kind == "cas":
        old, new = cast(tuple[object, object], op.arg)
        swapped = state == old
        if checked and op.result != swapped:
            return False, state
        return True, (new if swapped else state)
    if kind == "delete":
        return (not checked or op.result == (state is not None)), None
    if kind == "append":
        return True, _append(state, op.arg)
    raise ValueError(f"unknown operation kind {kind!r}; expected one of {sorted(KINDS)}")


def _append(state: object, suffix: object) -> str:
    # Appending to an absent key starts from "", as Redis's APPEND does.
    if state is None:
        state = ""
    if not isinstance(state, str) or not isinstance(suffix, str):
        raise TypeError(f"append needs strings, got state {state!r} and suffix {suffix!r}")
    return state + suffix


@dataclass(frozen=True)
class CheckResult:
    """Verdict of :func:`check`; ``witness`` is empty when ``ok``."""

    ok: bool
    key: str | None = None
    witness: list[Op] = field(default_factory=list)

    def describe(self) -> str:
        """Readable text of the verdict and of the witness stretch."""
        if self.ok:
            return "history is linearizable"
        lines = [
            f"key {self.key!r} is not linearizable: these {len(self.witness)} "
            "operations (in call order) have no legal sequential order from any "
            "value the key could have held before them",
        ]
        lines += ["  " + _format_op(op) for op in self.witness]
        return "\n".join(lines)


def _format_op(op: Op) -> str:
    when = f"call={op.call:g} " + ("ret=? (outcome unknown)" if op.ret is None else f"ret={op.ret:g}")
    if op.kind == "cas":
        old, new = cast(tuple[object, object], op.arg)
        what = f"cas({op.key!r}, {old!r} -> {new!r})"
    elif op.kind in ("set", "append"):
        what = f"{op.kind}({op.key!r}, {op.arg!r})"
    else:
        what = f"{op.kind}({op.key!r})"
    if op.ret is None:
        outcome = "?"
    elif op.kind in ("get", "delete", "cas"):
        outcome = repr(op.result)
    else:
        outcome = "ok"
    return f"[{op.process}] {what} -> {outcome}  {when}"


def check(
    history: Sequence[Op],
    initial: object = None,
    step: StepFn = kv_step,
    witness_budget: int = WITNESS_BUDGET,
) -> CheckResult:
    """Check that ``history`` is linearizable, one key at a time.

    Keys are searched side by side in the order of their first call; the
    first key proven not linearizable is reported with a short witness
    stretch of its history. ``initial`` is every key's value before the
    history (None = absent).
    """
    searches = {key: _Search(ops, [initial], step) for key, ops in _by_key(history).items()}
    # Keys take turns, SEARCH_SLICE steps each, as if checked in parallel:
    # a key that fails quickly is found even when another key needs a long
    # search, and a failure anywhere settles the verdict.
    while searches:
        for key, search in list(searches.items()):
            verdict = search.run(SEARCH_SLICE)
            if verdict is False:
                return _failure(key, search, initial, step, witness_budget)
            if verdict is True:
                del searches[key]  # frees its cache
    return CheckResult(ok=True)


def _failure(key: str, search: _Search, initial: object, step: StepFn, budget: int) -> CheckResult:
    ops = list(search.ops)
    shrinker = _Shrinker(ops, initial, search.reached_states(), step, budget)
    lo, hi = shrinker.shrink(search.failing_prefix())
    return CheckResult(ok=False, key=key, witness=ops[lo:hi])


def _by_key(history: Sequence[Op]) -> dict[str, list[Op]]:
    for op in history:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation returns before its call: {op}")
    per_key: dict[str, list[Op]] = {}
    for op in sorted(history, key=lambda o: o.call):
        per_key.setdefault(op.key, []).append(op)
    return per_key


@dataclass
class _Events:
    """Calls and returns in time order, as doubly linked lists over ints.

    Positions 1..n are the events in time order. Completed ops (call and
    return) are linked in the main list, from head 0 to ``main_tail``;
    unknown-outcome calls in a list of their own, from ``unknown_head`` to
    ``unknown_tail``. Lifting an op unlinks its events; unlifting relinks
    them (dancing links), so backtracking costs O(1).
    """

    nxt: list[int]
    prv: list[int]
    op_at: list[int]  # op index of each position
    is_call: list[bool]
    call_pos: list[int]  # position of each op's call
    ret_pos: list[int]  # position of each op's return, -1 if unknown outcome
    main_tail: int
    unknown_head: int
    unknown_tail: int

    @classmethod
    def build(cls, ops: Sequence[Op]) -> _Events:
        # At equal times calls sort before returns: such ops count as
        # concurrent, the permissive reading of a clock tie.
        events = [(op.call, 0, i) for i, op in enumerate(ops)]
        events += [(op.ret, 1, i) for i, op in enumerate(ops) if op.ret is not None]
        events.sort()
        size = len(events) + 4
        ev = cls(
            nxt=[-1] * size,
            prv=[-1] * size,
            op_at=[-1] * size,
            is_call=[False] * size,
            call_pos=[-1] * len(ops),
            ret_pos=[-1] * len(ops),
            main_tail=size - 3,
            unknown_head=size - 2,
            unknown_tail=size - 1,
        )
        main, unknown = [0], [ev.unknown_head]
        for pos, (_, is_ret, i) in enumerate(events, start=1):
            ev.op_at[pos] = i
            ev.is_call[pos] = not is_ret
            (ev.ret_pos if is_ret else ev.call_pos)[i] = pos
            (main if is_ret or ops[i].ret is not None else unknown).append(pos)
        for chain in ([*main, ev.main_tail], [*unknown, ev.unknown_tail]):
            for before, after in itertools.pairwise(chain):
                ev.nxt[before], ev.prv[after] = after, before
        return ev

    def lift(self, i: int) -> None:
        nxt, prv = self.nxt, self.prv
        for pos in (self.call_pos[i], self.ret_pos[i]):
            if pos >= 0:
                nxt[prv[pos]] = nxt[pos]
                prv[nxt[pos]] = prv[pos]

    def unlift(self, i: int) -> None:
        nxt, prv = self.nxt, self.prv
        for pos in (self.ret_pos[i], self.call_pos[i]):
            if pos >= 0:
                nxt[prv[pos]] = pos
                prv[nxt[pos]] = pos


class _Search:
    """Resumable search: is ``ops`` linearizable from any of ``starts``?

    ``run`` explores for a bounded number of model steps and can be called
    again to go on, so several keys can be searched side by side. The cache
    is shared between starts: a configuration (linearized ops, state) means
    the same thing however it was reached.

    The candidates at a configuration are the ops called before the first
    pending return. Completed candidates are tried before unknown-outcome
    ones: the latter usually never took effect, and trying them first sends
    a linearizable history down long dead ends.
    """

    def __init__(self, ops: Sequence[Op], starts: Sequence[object], step: StepFn) -> None:
        self.ops = ops
        self.starts = starts
        self.step = step
        self.cache: dict[tuple[int, object], None] = {}
        self.steps = 0
        self.completed = sum(op.ret is not None for op in ops)
        self.verdict: bool | None = True if self.completed == 0 else None
        self.events = _Events.build(ops)
        self.bits = [1 << i for i in range(len(ops))]
        # Latest return position the search was ever stopped at: nothing
        # after it took part, so the ops called before it fail on their own.
        self.frontier = 0
        self.next_start = 0
        self._restart()

    def _restart(self) -> None:
        self.state = self.starts[self.next_start]
        self.next_start += 1
        self.linearized = 0
        self.pending = self.completed
        # Frames: (call position tried, state and linearized set before it,
        # boundary); boundary 0 means the walk was on the main list.
        self.stack: list[tuple[int, object, int, int]] = []
        self.entry = self.events.nxt[0]
        self.boundary = 0

    def run(self, max_steps: float = math.inf) -> bool | None:
        """Search on; the verdict, or None if ``max_steps`` ran out first."""
        limit = self.steps + max_steps
        while self.verdict is None:
            found = self._explore(limit)
            if found is None:
                return None
            if found:
                self.verdict = True
            elif self.next_start < len(self.starts):
                self._restart()
            else:
                self.verdict = False
        return self.verdict

    def _explore(self, limit: float) -> bool | None:
        # The hot loop: everything it touches is a local, and the search
        # registers are saved back to self only when the step budget ends.
        # ``boundary`` is 0 while walking the main list's candidates, else
        # the position of the first pending return while walking the
        # unknown-outcome calls made before it.
        ev, ops, step, cache, bits = self.events, self.ops, self.step, self.cache, self.bits
        nxt, op_at, is_call, ret_pos = ev.nxt, ev.op_at, ev.is_call, ev.ret_pos
        unknown_head = ev.unknown_head
        state, linearized, pending, boundary = self.state, self.linearized, self.pending, self.boundary
        stack, entry, steps, frontier = self.stack, self.entry, self.steps, self.frontier
        found: bool | None = None
        while True:
            if not boundary:
                if not is_call[entry]:
                    # First pending return: unknown calls before it go next.
                    boundary = entry
                    frontier = max(frontier, entry)
                    entry = nxt[unknown_head]
                    continue
            elif entry > boundary:
                # Every candidate tried: undo the last choice.
                if not stack:
                    found = False
                    break
                entry, state, linearized, boundary = stack.pop()
                i = op_at[entry]
                ev.unlift(i)
                pending += ret_pos[i] >= 0
                entry = nxt[entry]
                continue
            if steps >= limit:
                break
            steps += 1
            i = op_at[entry]
            ok, new_state = step(state, ops[i])
            config = (linearized | bits[i], new_state)
            if not ok or config in cache:
                entry = nxt[entry]
                continue
            cache[config] = None
            stack.append((entry, state, linearized, boundary))
            ev.lift(i)
            pending -= ret_pos[i] >= 0
            if pending == 0:
                # Unknown-outcome ops not linearized yet never took effect.
                found = True
                break
            state, linearized, boundary = new_state, config[0], 0
            entry = nxt[0]
        self.state, self.linearized, self.pending, self.boundary = state, linearized, pending, boundary
        self.entry, self.steps, self.frontier = entry, steps, frontier
        return found

    def failing_prefix(self) -> int:
        """After a False verdict: how many leading ops fail by themselves.

        The search never looked past ``frontier``, so on the ops called
        before it (and the same starts) it would take the same steps.
        """
        return sum(pos < self.frontier for pos in self.events.call_pos)

    def reached_states(self) -> list[object]:
        """Every model state the search produced, first seen first."""
        return list(dict.fromkeys([*self.starts, *(state for _, state in self.cache)]))


class _Shrinker:
    """Finds a short window ops[lo:hi] that is not linearizable by itself.

    A window that starts at 0 is checked from the initial state. A later
    window is checked from every state the full search reached, so the
    witness does not blame a read for a write that was merely cut off.
    Each failing search also cuts ``hi`` to its failing prefix for free.
    """

    def __init__(self, ops: list[Op], initial: object, states: list[object], step: StepFn, budget: int) -> None:
        self.ops = ops
        self.initial = initial
        self.states = states
        self.step = step
        self.remaining = budget

    def shrink(self, hi: int) -> tuple[int, int]:
        """Shrink the failing window ops[0:hi] from both ends."""
        lo = 0
        changed = True
        while changed:
            changed = False
            # Big strides first: most of a long history is usually innocent.
            stride = _top_power_of_two(hi - lo)
            while stride:
                moved = self.fails(lo + stride, hi) if hi - lo > stride else None
                if moved is not None:
                    lo, hi, changed = lo + stride, moved, True
                else:
                    stride //= 2
            stride = _top_power_of_two(hi - lo)
            while stride:
                moved = self.fails(lo, hi - stride) if hi - lo > stride else None
                if moved is not None:
                    hi, changed = moved, True
                else:
                    stride //= 2
        return lo, hi

    def fails(self, lo: int, hi: int) -> int | None:
        """If ops[lo:hi] is proven non-linearizable in budget, a smaller hi."""
        if self.remaining <= 0:
            return None
        starts = [self.initial] if lo == 0 else self.states
        search = _Search(self.ops[lo:hi], starts, self.step)
        verdict = search.run(self.remaining)
        self.remaining -= search.steps
        return lo + search.failing_prefix() if verdict is False else None


def _top_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1) if n > 0 else 0
