"""The key-value state machine: semantics, exactly-once, validation, order."""

from __future__ import annotations

import pytest

from paxos import limits
from paxos.statemachine import Result, StateMachine, validate_key
from protos import kv_pb2


def cmd(
    client: str, seq: int, *, set: tuple[str, str] | None = None, delete: str | None = None, first_unacked: int = 0
) -> bytes:
    command = kv_pb2.Command(client_id=client, seq=seq, first_unacked=first_unacked)
    if set is not None:
        command.set.key, command.set.value = set
    if delete is not None:
        command.delete.key = delete
    return command.SerializeToString()


class Applier:
    """A state machine fed one command per slot."""

    def __init__(self, sm: StateMachine | None = None) -> None:
        self.sm = sm or StateMachine()

    def __call__(self, *commands: bytes) -> list[Result]:
        return self.sm.apply(self.sm.applied_index + 1, tuple(commands))


# ------------------------------------------------------------ semantics


def test_set_get_overwrite() -> None:
    apply = Applier()
    assert apply(cmd("c", 1, set=("k", "v1"))) == [Result("c", 1)]
    assert apply.sm.get("k") == "v1"
    apply(cmd("c", 2, set=("k", "v2")))
    assert apply.sm.get("k") == "v2"
    assert apply.sm.get("other") is None
    apply(cmd("c", 3, set=("empty", "")))
    assert apply.sm.get("empty") == ""


def test_delete_reports_whether_it_removed_a_value() -> None:
    apply = Applier()
    apply(cmd("c", 1, set=("k", "v")))
    assert apply(cmd("c", 2, delete="k")) == [Result("c", 2, removed=True)]
    assert apply.sm.get("k") is None
    assert apply(cmd("c", 3, delete="k")) == [Result("c", 3, removed=False)]
    assert apply(cmd("c", 4, delete="never-set")) == [Result("c", 4, removed=False)]
    assert apply.sm.data == {}


def test_a_batch_applies_in_order_and_a_noop_applies_nothing() -> None:
    sm = StateMachine()
    results = sm.apply(1, (cmd("a", 1, set=("k", "1")), cmd("b", 1, set=("k", "2")), cmd("a", 2, delete="k")))
    assert results == [Result("a", 1), Result("b", 1), Result("a", 2, removed=True)]
    assert sm.get("k") is None
    assert sm.apply(2, ()) == []
    assert sm.applied_index == 2


def test_unicode_keys_and_values() -> None:
    apply = Applier()
    apply(cmd("c", 1, set=("ключ 🔑", "значение ✓")))
    assert apply.sm.get("ключ 🔑") == "значение ✓"


# ---------------------------------------------------------- exactly once


def test_retried_write_returns_the_cached_result_and_changes_nothing() -> None:
    apply = Applier()
    first = apply(cmd("c", 1, set=("k", "mine")))
    apply(cmd("other", 1, set=("k", "theirs")))
    # The retry of ("c", 1) arrives in a later slot (e.g. after a leader change).
    assert apply(cmd("c", 1, set=("k", "mine"))) == first
    assert apply.sm.get("k") == "theirs"
    assert apply.sm.cached_result("c", 1) == Result("c", 1)


def test_retried_delete_keeps_its_first_outcome() -> None:
    apply = Applier()
    apply(cmd("c", 1, set=("k", "v")))
    assert apply(cmd("c", 2, delete="k")) == [Result("c", 2, removed=True)]
    apply(cmd("other", 1, set=("k", "again")))
    assert apply(cmd("c", 2, delete="k")) == [Result("c", 2, removed=True)]
    assert apply.sm.get("k") == "again"


def test_duplicate_in_the_same_batch_applies_once() -> None:
    sm = StateMachine()
    write = cmd("c", 1, delete="k")
    sm.apply(1, (cmd("x", 1, set=("k", "v")),))
    assert sm.apply(2, (write, write)) == [Result("c", 1, removed=True)] * 2


def test_results_below_first_unacked_are_forgotten_and_never_reapplied() -> None:
    apply = Applier()
    apply(cmd("c", 1, set=("k", "one")))
    apply(cmd("c", 2, set=("j", "two")))
    assert apply.sm.cached_result("c", 1) is not None
    apply(cmd("c", 3, set=("k", "three"), first_unacked=3))
    assert apply.sm.cached_result("c", 1) is None
    assert apply.sm.cached_result("c", 2) is None
    assert apply.sm.cached_result("c", 3) == Result("c", 3)
    # A very late duplicate of seq 1 is ignored: no result, no effect.
    assert apply(cmd("c", 1, set=("k", "one"))) == []
    assert apply.sm.get("k") == "three"
    # first_unacked never moves back.
    apply(cmd("c", 4, set=("z", "4"), first_unacked=1))
    assert apply(cmd("c", 2, set=("j", "again"))) == []
    assert apply.sm.get("j") == "two"


def test_sessions_are_per_client() -> None:
    apply = Applier()
    apply(cmd("a", 1, set=("k", "a")))
    assert apply(cmd("b", 1, set=("k", "b"))) == [Result("b", 1)]
    assert apply.sm.get("k") == "b"


def test_least_recently_active_session_is_forgotten_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_CLIENT_SESSIONS", 2)
    apply = Applier()
    apply(cmd("a", 1, set=("k", "a")))
    apply(cmd("b", 1, set=("k", "b")))
    apply(cmd("a", 2, set=("k", "a2")))  # a is now the most recent
    apply(cmd("c", 1, set=("k", "c")))  # evicts b
    assert apply.sm.cached_result("b", 1) is None
    assert apply.sm.cached_result("a", 2) is not None
    assert apply.sm.cached_result("c", 1) is not None


def test_write_whose_result_a_retry_needs_is_never_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SESSION_WINDOW", 2)
    apply = Applier()
    slow = cmd("c", 1, set=("k", "first"), first_unacked=1)
    apply(slow)  # chosen, but the reply is lost: the client keeps retrying seq 1
    # Meanwhile the same client completes more writes; seq 1 is still open.
    apply(cmd("c", 2, set=("x", "2"), first_unacked=1))
    [beyond] = apply(cmd("c", 3, set=("y", "3"), first_unacked=1))
    assert not beyond.ok and "window" in beyond.error
    assert apply.sm.get("y") is None
    apply(cmd("other", 1, set=("k", "second")))
    apply(slow)  # the retry of seq 1
    assert apply.sm.get("k") == "second", "seq 1 took effect twice"


# ------------------------------------------------------ invalid commands


def _invalid(apply: Applier, raw: bytes, fragment: str) -> None:
    before = dict(apply.sm.data)
    [result] = apply(raw)
    assert not result.ok
    assert fragment in result.error
    assert apply.sm.data == before


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (cmd("c", 1, set=("", "v")), "empty"),
        (cmd("c", 1, delete=""), "empty"),
        (cmd("c", 1, set=("k" * (limits.MAX_KEY_BYTES + 1), "v")), "limit is 1024"),
        # 513 two-byte characters: 513 characters but 1026 bytes of UTF-8.
        (cmd("c", 1, set=("é" * 513, "v")), "1026 bytes"),
        (cmd("c", 1, delete="é" * 513), "1026 bytes"),
        (cmd("c", 1, set=("k", "v" * 11)), "value is 11 bytes; the limit is 10"),
        (cmd("c", 1, set=("k", "é" * 6)), "value is 12 bytes"),
        (cmd("", 1, set=("k", "v")), "client id"),
        (cmd("c" * (limits.MAX_CLIENT_ID_BYTES + 1), 1, set=("k", "v")), "client id"),
        (cmd("c", 1), "unsupported command"),
    ],
    ids=[
        "empty-key",
        "empty-delete-key",
        "long-key",
        "long-utf8-key",
        "long-utf8-delete-key",
        "long-value",
        "long-utf8-value",
        "no-client",
        "long-client",
        "no-op",
    ],
)
def test_invalid_command_gives_an_error_and_changes_nothing(raw: bytes, fragment: str) -> None:
    apply = Applier(StateMachine(max_value_bytes=10))
    apply(cmd("setup", 1, set=("k", "kept")))
    _invalid(apply, raw, fragment)
    assert apply.sm.get("k") == "kept"


def test_limits_themselves_are_allowed() -> None:
    apply = Applier(StateMachine(max_value_bytes=10))
    key = "é" * (limits.MAX_KEY_BYTES // 2)  # exactly 1024 bytes
    assert apply(cmd("c", 1, set=(key, "v" * 10))) == [Result("c", 1)]
    assert apply.sm.get(key) == "v" * 10
    assert validate_key(key) is None
    assert validate_key("x" * limits.MAX_KEY_BYTES) is None
    assert validate_key("x" * (limits.MAX_KEY_BYTES + 1)) is not None


def test_retried_invalid_command_gives_the_same_error() -> None:
    apply = Applier(StateMachine(max_value_bytes=10))
    bad = cmd("c", 1, set=("k", "v" * 11))
    assert apply(bad) == apply(bad)


def test_undecodable_command_is_skipped() -> None:
    apply = Applier()
    apply(cmd("c", 1, set=("k", "v")))
    assert apply(b"\xff\xff\xff") == []
    assert apply.sm.data == {"k": "v"}
    assert apply.sm.applied_index == 2


# ------------------------------------------------------------ slot order


def test_slots_must_apply_in_order() -> None:
    sm = StateMachine()
    with pytest.raises(RuntimeError, match="slot 2 applied after 0"):
        sm.apply(2, (cmd("c", 1, set=("k", "v")),))
    assert sm.applied_index == 0 and sm.data == {}
    sm.apply(1, (cmd("c", 1, set=("k", "v")),))
    with pytest.raises(RuntimeError, match="slot 1 applied after 1"):
        sm.apply(1, (cmd("c", 2, set=("k", "other")),))
    with pytest.raises(RuntimeError, match="slot 3 applied after 1"):
        sm.apply(3, ())
    assert sm.get("k") == "v"
    assert sm.applied_index == 1
