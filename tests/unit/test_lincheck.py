"""Tests of the linearizability checker: hand-written histories, then the
corpus of histories with verdicts that did not come from this project."""

from __future__ import annotations

import itertools
import os
import random
import warnings
from pathlib import Path

import pytest

from tests.harness import PROJECT
from tests.harness.lincheck import CheckResult, Op, check, kv_step
from tests.harness.lincheck_corpus import (
    JEPSEN_KEY,
    load_history,
    parse_jepsen_etcd,
    parse_kv,
    read_verdicts,
)

# The corpus is read where it lies, never copied into the checkout: by
# default from ../shared/linearizability-corpus beside it, else from the
# folder this variable names.
CORPUS_ENV = "PAXOSKV_LINCHECK_CORPUS"
CORPUS_BESIDE = PROJECT.parent / "shared" / "linearizability-corpus"
CORPUS = Path(os.environ.get(CORPUS_ENV) or CORPUS_BESIDE)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _require_corpus() -> None:
    """Fail, or skip loudly, when the corpus is not there.

    Where a run is meant to be complete (CI set to "true" or "1"), or where
    the variable names a folder, a missing corpus is a broken setup and
    fails; elsewhere (a checkout without the shared folder) the corpus tests
    are skipped, saying so in the warnings summary as well as the skip.
    """
    if CORPUS.is_dir():
        return
    where = f"{CORPUS_ENV}={CORPUS}" if os.environ.get(CORPUS_ENV) else f"{CORPUS} (../shared beside the checkout)"
    message = (
        f"linearizability corpus not found at {where}; its verdict tests did not run. "
        f"Put the corpus there or set {CORPUS_ENV} to its folder."
    )
    if _in_ci() or os.environ.get(CORPUS_ENV):
        pytest.fail(message + (" (CI is set: a missing corpus fails the run)" if _in_ci() else ""), pytrace=False)
    warnings.warn(message, UserWarning, stacklevel=2)
    pytest.skip("CORPUS MISSING: " + message)


def op(
    process: object,
    kind: str,
    arg: object,
    call: float,
    ret: float | None,
    result: object = None,
    key: str = "x",
) -> Op:
    return Op(process, key, kind, arg, call, ret, result)


# --- hand-written histories -------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    history = [
        op(1, "get", None, 0, 1, None),
        op(1, "set", 1, 2, 3),
        op(2, "get", None, 4, 5, 1),
    ]
    result = check(history)
    assert result == CheckResult(ok=True)
    assert result.describe() == "history is linearizable"


def test_empty_history_is_linearizable() -> None:
    assert check([]).ok


def test_concurrent_writes_may_be_read_in_either_order() -> None:
    writes = [op(1, "set", 1, 0, 10), op(2, "set", 2, 1, 11)]
    assert check([*writes, op(3, "get", None, 12, 13, 1)]).ok
    assert check([*writes, op(3, "get", None, 12, 13, 2)]).ok
    assert not check([*writes, op(3, "get", None, 12, 13, None)]).ok


def test_stale_read_after_completed_write_is_caught_with_short_witness() -> None:
    stale_write = op(1, "set", 2, 6, 7)
    stale_read = op(2, "get", None, 8, 9, 1)
    history = [
        op(1, "get", None, 0, 1, None),
        op(1, "set", 1, 2, 3),
        op(2, "get", None, 4, 5, 1),
        stale_write,
        stale_read,
        op(1, "get", None, 10, 11, 2),
        op(3, "set", 3, 12, 13),
    ]
    result = check(history)
    assert not result.ok
    assert result.key == "x"
    assert result.witness == [stale_write, stale_read]
    text = result.describe()
    assert "'x'" in text and "set('x', 2)" in text and "get('x') -> 1" in text


def test_read_of_a_value_never_written_is_caught() -> None:
    result = check([op(1, "set", 1, 0, 1), op(2, "get", None, 2, 3, 7)])
    assert not result.ok
    assert op(2, "get", None, 2, 3, 7) in result.witness


@pytest.mark.parametrize("seen", [None, 5], ids=["not-seen", "seen"])
def test_unknown_outcome_write_may_or_may_not_take_effect(seen: object) -> None:
    history = [
        op(1, "set", 5, 0, None),  # the client timed out: outcome unknown
        op(2, "get", None, 1, 2, seen),
        op(2, "get", None, 3, 4, seen),
    ]
    assert check(history).ok


def test_unknown_outcome_write_cannot_take_effect_before_its_call() -> None:
    history = [op(2, "get", None, 0, 1, 5), op(1, "set", 5, 2, None)]
    assert not check(history).ok


def test_unknown_outcome_write_cannot_be_undone() -> None:
    history = [
        op(1, "set", 5, 0, None),
        op(2, "get", None, 1, 2, 5),
        op(2, "get", None, 3, 4, None),
    ]
    assert not check(history).ok


def test_unknown_outcome_result_is_not_checked() -> None:
    # Whatever an unfinished get or cas "returned" was never observed.
    history = [
        op(1, "set", 1, 0, 1),
        op(2, "get", None, 2, None, 99),
        op(3, "cas", (1, 2), 3, None, False),
        op(4, "get", None, 5, 6, 2),
    ]
    assert check(history).ok


def test_delete_reports_whether_it_removed_a_value() -> None:
    assert check(
        [
            op(1, "delete", None, 0, 1, False),
            op(1, "set", 1, 2, 3),
            op(1, "delete", None, 4, 5, True),
            op(2, "get", None, 6, 7, None),
            op(2, "delete", None, 8, 9, False),
        ]
    ).ok
    assert not check([op(1, "delete", None, 0, 1, True)]).ok
    assert not check([op(1, "set", 1, 0, 1), op(1, "delete", None, 2, 3, False)]).ok
    assert not check([op(1, "set", 1, 0, 1), op(1, "delete", None, 2, 3, True), op(2, "get", None, 4, 5, 1)]).ok


def test_cas_swaps_only_when_the_old_value_matches() -> None:
    assert check(
        [
            op(1, "set", 1, 0, 1),
            op(1, "cas", (2, 3), 2, 3, False),
            op(1, "cas", (1, 3), 4, 5, True),
            op(2, "get", None, 6, 7, 3),
            op(2, "cas", (None, 4), 8, 9, False),
        ]
    ).ok
    assert not check([op(1, "set", 1, 0, 1), op(1, "cas", (2, 3), 2, 3, True)]).ok
    assert not check([op(1, "set", 1, 0, 1), op(1, "cas", (1, 3), 2, 3, False)]).ok
    assert not check([op(1, "cas", (None, 3), 0, 1, True), op(2, "get", None, 2, 3, None)]).ok


def test_concurrent_cas_only_one_can_win() -> None:
    both_won = [
        op(1, "set", 0, 0, 1),
        op(2, "cas", (0, 1), 2, 5, True),
        op(3, "cas", (0, 2), 3, 6, True),
    ]
    assert not check(both_won).ok
    one_won = [*both_won[:2], op(3, "cas", (0, 2), 3, 6, False)]
    assert check(one_won).ok


def test_append_builds_strings_from_the_initial_value() -> None:
    history = [
        op(1, "append", "a", 0, 1),
        op(2, "append", "b", 2, 5),
        op(3, "append", "c", 3, 6),
        op(4, "get", None, 7, 8, "acb"),
    ]
    assert check(history, initial="").ok
    assert not check([*history, op(4, "get", None, 9, 10, "abc")], initial="").ok


def test_keys_are_independent_registers() -> None:
    interleaved = [
        op(1, "set", 1, 0, 1, key="a"),
        op(2, "set", 2, 2, 3, key="b"),
        op(3, "get", None, 4, 5, 1, key="a"),
        op(4, "get", None, 6, 7, 2, key="b"),
    ]
    # As one register this would read a stale 1; as two keys it is fine.
    assert check(interleaved).ok
    bad_b = op(4, "get", None, 8, 9, None, key="b")
    result = check([*interleaved, bad_b])
    assert not result.ok
    assert result.key == "b"
    assert bad_b in result.witness
    assert all(o.key == "b" for o in result.witness)


def test_custom_step_function() -> None:
    def counter(state: object, o: Op) -> tuple[bool, object]:
        assert isinstance(state, int)
        if o.kind == "set":  # used as "increment by arg"
            assert isinstance(o.arg, int)
            return True, state + o.arg
        return o.ret is None or o.result == state, state

    incs = [op(1, "set", 1, 0, 3), op(2, "set", 2, 1, 4)]
    assert check([*incs, op(3, "get", None, 5, 6, 3)], initial=0, step=counter).ok
    assert not check([*incs, op(3, "get", None, 5, 6, 2)], initial=0, step=counter).ok


def test_rejects_an_op_that_returns_before_its_call() -> None:
    with pytest.raises(ValueError, match="returns before its call"):
        check([op(1, "set", 1, 5, 4)])


def _brute_force(history: list[Op], initial: object) -> bool:
    """Oracle for tiny histories: try every order of every allowed subset."""
    done = [o for o in history if o.ret is not None]
    unknown = [o for o in history if o.ret is None]
    for n in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, n):
            for order in itertools.permutations(done + list(extra)):
                if _legal(order, initial):
                    return True
    return False


def _legal(order: tuple[Op, ...], initial: object) -> bool:
    for a, b in itertools.combinations(order, 2):
        if b.ret is not None and b.ret < a.call:
            return False  # b finished before a started, yet comes after it
    state = initial
    for o in order:
        ok, state = kv_step(state, o)
        if not ok:
            return False
    return True


def _random_history(rng: random.Random) -> list[Op]:
    history = []
    for process in range(rng.randint(1, 6)):
        call = rng.randint(0, 10)
        ret = None if rng.random() < 0.2 else call + rng.randint(0, 4)
        kind = rng.choice(["set", "get", "delete", "cas"])
        value = rng.choice([None, 1, 2])
        arg = {"set": rng.choice([1, 2]), "cas": (value, rng.choice([1, 2]))}.get(kind)
        result = {"get": value, "delete": rng.random() < 0.5, "cas": rng.random() < 0.5}.get(kind)
        history.append(op(process, kind, arg, call, ret, result))
    return history


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(20240611)
    verdicts = set()
    for _ in range(1500):
        history = _random_history(rng)
        expected = _brute_force(history, None)
        result = check(history)
        assert result.ok == expected, history
        verdicts.add(expected)
        if not result.ok and result.witness[0] == min(history, key=lambda o: o.call):
            assert not check(result.witness).ok  # a witness from the start fails alone
    assert verdicts == {True, False}


# --- corpus parsers ---------------------------------------------------------


def test_jepsen_parser_pairs_events_per_process() -> None:
    log = "\n".join(
        [
            "INFO  jepsen.util - 0\t:invoke\t:write\t3",
            "INFO  jepsen.util - 1\t:invoke\t:read\tnil",
            "INFO  jepsen.util - 0\t:info\t:write\t:timed-out",
            "INFO  jepsen.util - 1\t:fail\t:read\t:timed-out",
            "INFO  jepsen.util - 0   :invoke :cas    [3 4]",
            "INFO  jepsen.util - 2\t:invoke\t:read\tnil",
            "INFO  jepsen.util - 0\t:fail\t:cas\t[3 4]",
            "INFO  jepsen.util - 2\t:ok\t:read\tnil",
            "INFO  jepsen.util - 3\t:invoke\t:cas\t[0 1]",
        ]
    )
    assert parse_jepsen_etcd(log) == [
        Op(0, JEPSEN_KEY, "set", 3, 0, None),  # :info: outcome unknown
        Op(0, JEPSEN_KEY, "cas", (3, 4), 4, 6, False),  # same id, new op
        Op(2, JEPSEN_KEY, "get", None, 5, 7, None),
        Op(3, JEPSEN_KEY, "cas", (0, 1), 8, None),  # never completed
    ]  # the failed read observed nothing and is dropped


def test_jepsen_parser_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_jepsen_etcd("hello")


def test_kv_parser() -> None:
    log = "\n".join(
        [
            '{:process 0, :type :invoke, :f :put, :key "k", :value "a"}',
            '{:process 1, :type :invoke, :f :get, :key "k", :value nil}',
            '{:process 0, :type :ok, :f :put, :key "k", :value "a"}',
            '{:process 1, :type :ok, :f :get, :key "k", :value "a"}',
            '{:process 0, :type :invoke, :f :append, :key "j", :value "x 0 1 y"}',
            '{:process 0, :type :ok, :f :append, :key "j", :value "x 0 1 y"}',
        ]
    )
    assert parse_kv(log) == [
        Op(0, "k", "set", "a", 0, 2),
        Op(1, "k", "get", None, 1, 3, "a"),
        Op(0, "j", "append", "x 0 1 y", 4, 5),
    ]


# --- the corpus -------------------------------------------------------------


def _verdict_params() -> list[object]:
    if not CORPUS.is_dir():
        # One test stands for the missing corpus, and fails or skips (_require_corpus).
        return [pytest.param("", True, id="corpus-missing")]
    return [pytest.param(name, verdict, id=name) for name, verdict in read_verdicts(CORPUS)]


@pytest.mark.parametrize(("name", "linearizable"), _verdict_params())
def test_corpus_verdict(name: str, linearizable: bool) -> None:
    _require_corpus()
    history = load_history(CORPUS / name)
    result = check(history.ops, history.initial)
    assert result.ok == linearizable, result.describe()
    if not linearizable:
        key_ops = [o for o in history.ops if o.key == result.key]
        assert result.witness and all(o in key_ops for o in result.witness)
        assert len(result.witness) <= 10, result.describe()


def test_corpus_files_all_have_verdicts() -> None:
    _require_corpus()
    files = {p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*") if p.suffix in (".log", ".txt")}
    assert files == {name for name, _ in read_verdicts(CORPUS)}
