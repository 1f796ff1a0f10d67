"""The key-value state machine: semantics, exactly-once, validation, order."""

from __future__ import annotations

import pytest

from paxos.common import limits
from paxos.kv import logcommand
from paxos.kv.statemachine import Outcome, Registration, Result, StateMachine, validate_command, validate_key
from protos import kv_pb2, log_pb2
from tests.harness.logcommands import Applier, cmd, image, register


def request(
    client: str, seq: int, *, set: tuple[str, str] | None = None, delete: str | None = None, first_unacked: int = 0
) -> kv_pb2.Command:
    """A write as a client sends it."""
    command = kv_pb2.Command(client_id=client, seq=seq, first_unacked=first_unacked)
    if set is not None:
        command.set.key, command.set.value = set
    if delete is not None:
        command.delete.key = delete
    return command


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
    # A very late duplicate of seq 1 has no effect, and its result says
    # that its outcome is unknown (not that nothing was ever applied).
    [late] = apply(cmd("c", 1, set=("k", "one")))
    assert (late.session, late.seq, late.outcome) == ("c", 1, Outcome.UNKNOWN)
    assert "moved on to 3" in late.error and not late.ok
    assert apply.sm.get("k") == "three"
    assert apply.sm.cached_result("c", 1) is None
    # first_unacked never moves back.
    apply(cmd("c", 4, set=("z", "4"), first_unacked=1))
    assert [r.outcome for r in apply(cmd("c", 2, set=("j", "again")))] == [Outcome.UNKNOWN]
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


# ------------------------------------- checks before proposing (the leader's)


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (request("c", 1, set=("", "v")), "empty"),
        (request("c", 1, delete=""), "empty"),
        (request("c", 1, set=("k" * (limits.MAX_KEY_BYTES + 1), "v")), "limit is 1024"),
        # 513 two-byte characters: 513 characters but 1026 bytes of UTF-8.
        (request("c", 1, set=("é" * 513, "v")), "1026 bytes"),
        (request("c", 1, delete="é" * 513), "1026 bytes"),
        (request("c", 1, set=("k", "v" * 11)), "value is 11 bytes; the limit is 10"),
        (request("c", 1, set=("k", "é" * 6)), "value is 12 bytes"),
        (request("", 1, set=("k", "v")), "needs a session"),
        (kv_pb2.Command(session_id=1, client_id="c", seq=1, set=kv_pb2.SetOp(key="k", value="v")), "not both"),
        (request("c" * (limits.MAX_CLIENT_ID_BYTES + 1), 1, set=("k", "v")), "client id"),
        (request("c", 1), "unsupported command"),
        (request("c", 2000, set=("k", "v"), first_unacked=1), "window"),
    ],
    ids=[
        "empty-key",
        "empty-delete-key",
        "long-key",
        "long-utf8-key",
        "long-utf8-delete-key",
        "long-value",
        "long-utf8-value",
        "no-session",
        "session-and-client",
        "long-client",
        "no-op",
        "beyond-window",
    ],
)
def test_leader_refuses_an_invalid_request_before_proposing(command: kv_pb2.Command, fragment: str) -> None:
    error = validate_command(command, max_value_bytes=10)
    assert error is not None and fragment in error


def test_limits_themselves_are_allowed() -> None:
    key = "é" * (limits.MAX_KEY_BYTES // 2)  # exactly 1024 bytes
    assert validate_command(request("c", 1, set=(key, "v" * 10)), max_value_bytes=10) is None
    assert validate_key(key) is None
    assert validate_key("x" * limits.MAX_KEY_BYTES) is None
    assert validate_key("x" * (limits.MAX_KEY_BYTES + 1)) is not None


def test_leader_copies_a_request_into_the_log_field_by_field() -> None:
    sm = StateMachine()
    [registered] = sm.apply(1, (logcommand.register_session(7, 1),))
    assert registered == Registration(7, 1, 1)
    h = bytes(range(limits.IMAGE_HASH_BYTES))
    iset = kv_pb2.Command(session_id=1, seq=3, first_unacked=1, iset=kv_pb2.ImageSetOp(hashes=[h], metadata="cat"))
    set_k = kv_pb2.Command(session_id=1, seq=1, first_unacked=1, set=kv_pb2.SetOp(key="k", value="v"))
    raws = (
        logcommand.client_write(set_k),
        logcommand.client_write(kv_pb2.Command(session_id=1, seq=2, first_unacked=1, delete=kv_pb2.DeleteOp(key="g"))),
        logcommand.client_write(iset),
    )
    assert [log_pb2.LogCommand.FromString(r).client_write.seq for r in raws] == [1, 2, 3]
    assert sm.apply(2, raws) == [Result(1, 1), Result(1, 2, removed=False), Result(1, 3)]
    assert sm.get("k") == "v"
    assert [m.metadata for m in sm.image_matches(h, 0, 1)] == ["cat"]
    with pytest.raises(ValueError, match="cannot go into the log"):
        logcommand.client_write(request("c", 4))  # no op: validate_command refuses it first


# ------------------------------------------------- apply depends on the log


def test_apply_depends_on_no_server_setting() -> None:
    """Two replicas fed the same chosen values end identical, including a
    value over any server's --max-value-bytes (the old apply refused it on
    the servers whose limit was smaller than the leader's)."""
    big = "v" * (limits.DEFAULT_MAX_VALUE_BYTES + 1)
    assert validate_command(request("c", 1, set=("big", big)), limits.DEFAULT_MAX_VALUE_BYTES) is not None
    chosen = [
        (cmd("c", 1, set=("big", big), first_unacked=1),),
        (cmd("c", 2, set=("k" * (limits.MAX_KEY_BYTES + 1), "long key"), first_unacked=1),),
        (cmd("c", 3, set=("small", "s"), first_unacked=1), cmd("c", 4, delete="small", first_unacked=1)),
    ]
    replicas = [StateMachine(), StateMachine()]
    for sm in replicas:
        for slot, value in enumerate(chosen, start=1):
            assert all(r.ok for r in sm.apply(slot, value))
    assert replicas[0].data == replicas[1].data == {"big": big, "k" * (limits.MAX_KEY_BYTES + 1): "long key"}
    assert replicas[0].cached_result("c", 1) == replicas[1].cached_result("c", 1) == Result("c", 1)


# ------------------------------------------- refused at apply, on every replica


def _refused(apply: Applier, raw: bytes, fragment: str) -> None:
    before = dict(apply.sm.data)
    [result] = apply(raw)
    assert result.outcome is Outcome.REFUSED and not result.ok
    assert fragment in result.error
    assert apply.sm.data == before


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (cmd("", 1, set=("k", "v")), "needs a session"),
        (cmd("c", 1), "no operation"),
        (cmd("c", 5, set=("k", "v"), first_unacked=6), "window"),
        (cmd("c", limits.SESSION_WINDOW + 1, set=("k", "v"), first_unacked=1), "window"),
        (image("c", 1, []), "at least one hash"),
        (image("c", 1, [b"short"]), "image hash is 5 bytes"),
    ],
    ids=["no-client", "no-op", "seq-below-own-first-unacked", "beyond-window", "no-hashes", "short-hash"],
)
def test_command_the_state_cannot_take_is_refused_and_changes_nothing(raw: bytes, fragment: str) -> None:
    apply = Applier()
    apply(cmd("setup", 1, set=("k", "kept")))
    _refused(apply, raw, fragment)
    assert apply.sm.get("k") == "kept"
    assert apply.sm.cached_result("c", 1) is None


def test_retried_refused_command_gives_the_same_error() -> None:
    apply = Applier()
    bad = cmd("c", 1)
    assert apply(bad) == apply(bad)


def test_skipped_write_reports_the_result_its_waiter_needs() -> None:
    apply = Applier()
    apply(cmd("c", 10, set=("k", "ten"), first_unacked=10))
    # Valid in itself, never applied before, but the session is past it.
    [skipped] = apply(cmd("c", 5, set=("k", "five"), first_unacked=5))
    assert (skipped.session, skipped.seq, skipped.outcome) == ("c", 5, Outcome.UNKNOWN)
    assert skipped.error
    # A copy of a write whose result is still kept gets that result.
    assert apply(cmd("c", 10, set=("k", "ten"), first_unacked=10)) == [Result("c", 10)]
    assert apply.sm.get("k") == "ten"


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff", log_pb2.LogCommand().SerializeToString(), b"\x12\x03abc"],
    ids=["undecodable", "empty", "unknown-kind"],
)
def test_unreadable_command_is_counted_and_changes_nothing(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    apply = Applier()
    apply(cmd("c", 1, set=("k", "v")))
    assert apply(raw, raw) == []
    assert apply(raw) == []
    assert apply.sm.unreadable_commands == 3
    assert len([r for r in caplog.records if "chosen in slot 2" in r.getMessage()]) == 1, "logged once, not per command"
    assert apply.sm.data == {"k": "v"}
    assert apply.sm.applied_index == 3
    assert apply(cmd("c", 2, set=("k", "w"))) == [Result("c", 2)]


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


# ------------------------------------------------------ registered sessions


def test_sessions_are_numbered_by_the_log_and_never_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_CLIENT_SESSIONS", 3)
    apply = Applier()
    assert apply(register(1), register(2, proposer=8)) == [Registration(7, 1, 1), Registration(8, 2, 2)]
    assert apply(register(1)) == [Registration(7, 1, 3)]  # the same nonce again: a new session all the same
    assert [r.session_id for r in apply(register(3), register(4)) if isinstance(r, Registration)] == [4, 5]
    assert apply.sm.session_count == 3
    assert [key for key, _, _ in apply.sm.session_table()] == [3, 4, 5]
    assert apply.sm.next_session_id == 6


def test_a_write_in_an_unknown_or_evicted_session_is_refused_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_CLIENT_SESSIONS", 3)
    apply = Applier()
    apply(register(1))
    assert apply(cmd(1, 5, set=("balance", "100"), first_unacked=5)) == [Result(1, 5)]
    apply(register(2))
    apply(cmd(2, 1, set=("balance", "0"), first_unacked=1))
    assert apply(cmd(1, 5, set=("balance", "100"), first_unacked=5)) == [Result(1, 5)]  # deduplicated
    assert apply.sm.get("balance") == "0"
    apply(*(register(n) for n in range(3, 6)))  # session 1 is the least recently used: evicted
    assert not apply.sm.has_session(1)
    [replayed] = apply(cmd(1, 5, set=("balance", "100"), first_unacked=5))
    assert (replayed.session, replayed.seq, replayed.outcome) == (1, 5, Outcome.EXPIRED) and not replayed.ok
    assert "expired" in replayed.error
    assert apply.sm.get("balance") == "0"
    assert not apply.sm.has_session(1), "a refused write opens no session"
    [never] = apply(cmd(99, 1, set=("balance", "99"), first_unacked=1))
    assert never.outcome is Outcome.EXPIRED and apply.sm.get("balance") == "0"


def test_a_write_using_a_session_keeps_it_from_eviction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_CLIENT_SESSIONS", 2)
    apply = Applier()
    apply(register(1), register(2))
    apply(cmd(1, 1, set=("k", "v"), first_unacked=1))  # session 1 is now the most recently used
    apply(register(3))
    assert apply.sm.has_session(1) and not apply.sm.has_session(2)


def test_a_client_named_session_required_by_the_leader_is_not_opened_by_its_write() -> None:
    apply = Applier()
    write = log_pb2.ClientWrite(client_id="old", seq=1, session_required=True, set=log_pb2.SetOp(key="k", value="v"))
    [refused] = apply(log_pb2.LogCommand(client_write=write).SerializeToString())
    assert refused.outcome is Outcome.EXPIRED and apply.sm.data == {}
    apply(cmd("old", 1, delete="nothing"))  # as a log from before registration holds it: opens "old"
    assert apply(log_pb2.LogCommand(client_write=write).SerializeToString()) == [Result("old", 1, removed=False)]
    assert apply.sm.data == {}, "seq 1 of 'old' was applied already: its first result is returned"


def test_an_image_found_by_any_of_its_hashes_is_named_by_its_full_frame_hash() -> None:
    # The first hash is the whole picture's; the others are variants (crops,
    # flips) that only help find it.  A match reports the first.
    sm = StateMachine()
    [registered] = sm.apply(1, (logcommand.register_session(7, 1),))
    full, variant = bytes(limits.IMAGE_HASH_BYTES), bytes([0xFF] * limits.IMAGE_HASH_BYTES)
    iset = kv_pb2.Command(
        session_id=registered.session_id,
        seq=1,
        first_unacked=1,
        iset=kv_pb2.ImageSetOp(hashes=[full, variant], metadata="cat"),
    )
    assert sm.apply(2, (logcommand.client_write(iset),)) == [Result(registered.session_id, 1)]
    for probe in (full, variant):
        [match] = sm.image_matches(probe, 0, 5)
        assert (match.hash, match.distance, match.metadata) == (full, 0, "cat")
