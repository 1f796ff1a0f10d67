"""The command line (client/cli.py) against a fake client: no cluster needed.

The seam is ``main(argv, client_factory=...)``: the factory gets the hostfile
path and the timeout and returns anything with the ``KV`` methods.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client import ImageError, ImageMatch, InvalidRequest, Unavailable, UnknownOutcome, cli
from client.images import DEFAULT_MAX_DISTANCE
from client.retry import SessionExpired
from paxos.common.hostfile import HostfileError
from paxos.common.versions import RELEASE


def node(name: str, role: str = "follower", leader: str = "n1", reachable: bool = True) -> dict[str, object]:
    return {
        "name": name,
        "address": f"{name}:50051",
        "reachable": reachable,
        "role": role if reachable else "down",
        "leader": leader if reachable else "",
        "ballot": "3.0" if reachable else "",
        "commit_index": 7,
        "applied_index": 7,
        "extra": "not part of the output",
    }


HEALTHY = [node("n1", "leader"), node("n2"), node("n3")]


@dataclass
class FakeKV:
    data: dict[str, str] = field(default_factory=dict)
    nodes: list[dict[str, object]] = field(default_factory=lambda: list(HEALTHY))
    fail: Exception | None = None  # raised by every data operation
    reads: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False
    images: dict[str, str] = field(default_factory=dict)
    image_lookups: list[tuple[str, int, int | None, str]] = field(default_factory=list)

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def set(self, key: str, value: str) -> None:
        self._check()
        self.data[key] = value

    def get(self, key: str, consistency: str = "linearizable") -> str | None:
        self._check()
        self.reads.append((key, consistency))
        return self.data.get(key)

    def delete(self, key: str) -> bool:
        self._check()
        return self.data.pop(key, None) is not None

    def status(self) -> Sequence[Mapping[str, object]]:
        return self.nodes

    def iset(self, image: str, metadata: str) -> str:
        self._check()
        if image == "missing.png":
            raise ImageError("missing.png: no such file")
        self.images[image] = metadata
        return "ab" * 36

    def inearest(
        self, image: str, limit: int = 5, max_distance: int | None = None, consistency: str = "linearizable"
    ) -> list[ImageMatch]:
        self._check()
        self.image_lookups.append((image, limit, max_distance, consistency))
        found = [ImageMatch("cd" * 36, 3, meta) for name, meta in self.images.items() if name == image]
        return found[:limit]

    def close(self) -> None:
        self.closed = True


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def kv() -> FakeKV:
    return FakeKV(data={"k": "v"})


class Runner:
    """runner(*argv, stdin=None) -> Run, with the fake ``kv`` behind any hostfile."""

    def __init__(self, kv: FakeKV, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.kv, self.capsys, self.monkeypatch = kv, capsys, monkeypatch
        self.factory_calls: list[tuple[str, float]] = []

    def factory(self, hostfile: str, timeout: float, tls_dir: str | None = None) -> cli.KV:
        self.factory_calls.append((hostfile, timeout))
        return self.kv

    def __call__(self, *argv: str, stdin: str | None = None) -> Run:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = cli.main(list(argv), client_factory=self.factory)
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)


@pytest.fixture(autouse=True)
def no_default_hostfile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's environment nor a local cluster in the checkout picks the hostfile."""
    monkeypatch.delenv(cli.HOSTFILE_ENV, raising=False)
    monkeypatch.setattr(cli, "LOCAL_HOSTFILE", tmp_path / "no-local-cluster" / "hostfile.txt")


@pytest.fixture
def run(kv: FakeKV, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(kv, capsys, monkeypatch)


# ------------------------------------------------------------------ help/usage


def test_help_lists_commands_exit_codes_and_examples(run: Runner) -> None:
    result = run("--help")
    assert result.code == 0
    for word in (
        "set <key> <value>",
        "get <key>",
        "delete <key>",
        "status [--json | -w table|json]",
        "iset",
        "quit",
        "--stale",
    ):
        assert word in result.out
    assert "exit status" in result.out and "examples" in result.out
    assert "-h HOSTFILE" in result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "no hostfile: give -h HOSTFILE, set PAXOSKV_HOSTFILE"),
        (("get", "k"), "no hostfile"),
        (("-h", "hf", "--timeout", "0", "get", "k"), "--timeout"),
        (("-h", "hf", "--timeout", "soon", "get", "k"), "not a number"),
        (("-h", "hf", "--bogus", "get", "k"), "unrecognized arguments"),
        (("-h", "hf", "get"), "usage: get <key>"),
        (("-h", "hf", "get", "a", "b"), "usage: get <key>"),
        (("-h", "hf", "set", "k"), "usage: set <key> <value>"),
        (("-h", "hf", "status", "--yaml"), "--json"),
        (("-h", "hf", "frobnicate"), "unknown command 'frobnicate'; type help"),
    ],
)
def test_usage_errors_exit_2(run: Runner, argv: tuple[str, ...], message: str) -> None:
    result = run(*argv)
    assert result.code == cli.EXIT_USAGE
    assert message in result.err
    assert result.out == ""


def test_command_is_checked_before_connecting(run: Runner) -> None:
    assert run("-h", "hf", "get").code == cli.EXIT_USAGE
    assert run.factory_calls == []


def test_misspelt_command_gets_a_suggestion(run: Runner) -> None:
    result = run("-h", "hf", "gte", "k")
    assert result.code == cli.EXIT_USAGE
    assert "unknown command 'gte'; did you mean 'get'? type help" in result.err


def test_bad_hostfile_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("n1\nn2 nowhere\n")
    code = cli.main(["-h", str(hostfile), "get", "k"])  # the real KVClient factory
    assert code == cli.EXIT_USAGE
    assert f"{hostfile}:2" in capsys.readouterr().err


def test_hostfile_error_from_factory_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def factory(hostfile: str, timeout: float, tls_dir: str | None = None) -> cli.KV:
        raise HostfileError(f"{hostfile}: hostfile not found")

    assert cli.main(["-h", "missing.txt", "get", "k"], client_factory=factory) == cli.EXIT_USAGE
    assert "missing.txt: hostfile not found" in capsys.readouterr().err


def test_hostfile_and_timeout_reach_the_factory(run: Runner) -> None:
    run("-h", "cluster.txt", "--timeout", "2.5", "get", "k")
    assert run.factory_calls == [("cluster.txt", 2.5)]


# --------------------------------------------------------------- one-shot


def test_get_prints_the_value_alone(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", "get", "k")
    assert (result.code, result.out, result.err) == (0, "v\n", "")
    assert kv.reads == [("k", "linearizable")]
    assert kv.closed


def test_get_missing_key_exits_1(run: Runner) -> None:
    result = run("-h", "hf", "get", "nope")
    assert (result.code, result.out) == (cli.EXIT_NOT_FOUND, "")
    assert "not found" in result.err


def test_stale_reads_one_replica(run: Runner, kv: FakeKV) -> None:
    assert run("-h", "hf", "--stale", "get", "k").out == "v\n"
    assert kv.reads == [("k", "local")]


def test_set_prints_ok_and_keeps_spaces(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", "set", "greeting", "hello  big world")
    assert (result.code, result.out, result.err) == (0, "", "OK\n")
    assert kv.data["greeting"] == "hello  big world"


def test_set_joins_unquoted_words(run: Runner, kv: FakeKV) -> None:
    assert run("-h", "hf", "set", "greeting", "hello", "world").code == 0
    assert kv.data["greeting"] == "hello world"


def test_set_accepts_an_explicit_empty_value(run: Runner, kv: FakeKV) -> None:
    assert run("-h", "hf", "set", "k", "").code == 0
    assert kv.data["k"] == ""


def test_delete(run: Runner, kv: FakeKV) -> None:
    assert (run("-h", "hf", "delete", "k").code, "k" in kv.data) == (0, False)
    result = run("-h", "hf", "delete", "k")
    assert (result.code, result.out, result.err) == (cli.EXIT_NOT_FOUND, "", "not found\n")


def test_unavailable_exits_3_naming_the_addresses(run: Runner, kv: FakeKV) -> None:
    kv.fail = Unavailable("cluster unavailable after 10s; tried n1:50051, n2:50051")
    result = run("-h", "hf", "get", "k")
    assert (result.code, result.out) == (cli.EXIT_CLUSTER, "")
    assert result.err.startswith("error: cluster unavailable after 10s; tried n1:50051, n2:50051;")
    assert len(result.err.splitlines()) == 1


def test_unknown_outcome_exits_3_and_says_so(run: Runner, kv: FakeKV) -> None:
    kv.fail = UnknownOutcome("write outcome unknown after 10s")
    result = run("-h", "hf", "set", "k", "v2")
    assert result.code == cli.EXIT_CLUSTER
    assert "outcome unknown" in result.err
    assert len(result.err.splitlines()) == 1
    kv.fail = UnknownOutcome("lost track of the write")
    assert "error: outcome unknown: lost track of the write;" in run("-h", "hf", "delete", "k").err


def test_an_expired_session_exits_3_as_an_unknown_outcome(run: Runner, kv: FakeKV) -> None:
    kv.fail = SessionExpired("write outcome unknown: its session expired")
    result = run("-h", "hf", "set", "k", "v2")
    assert result.code == cli.EXIT_CLUSTER
    assert "session expired" in result.err and "read the key" in result.err
    assert len(result.err.splitlines()) == 1


def test_invalid_request_exits_2(run: Runner, kv: FakeKV) -> None:
    kv.fail = InvalidRequest("key must be 1 to 1024 bytes of UTF-8, got 0")
    result = run("-h", "hf", "get", "")
    assert result.code == cli.EXIT_USAGE
    assert "1024 bytes" in result.err


def test_iset_then_iget_prints_metadata_alone(run: Runner, kv: FakeKV) -> None:
    stored = run("-h", "hf", "iset", "cat.png", "a", "grey", "cat")
    assert stored.code == 0 and stored.out == ""
    assert kv.images == {"cat.png": "a grey cat"}
    found = run("-h", "hf", "iget", "cat.png")
    assert (found.code, found.out) == (0, "a grey cat\n")
    assert kv.image_lookups[-1] == ("cat.png", 1, DEFAULT_MAX_DISTANCE, "linearizable")


def test_iget_of_unknown_image_exits_1(run: Runner) -> None:
    result = run("-h", "hf", "iget", "dog.png")
    assert (result.code, result.out, result.err) == (cli.EXIT_NOT_FOUND, "", "not found\n")


def test_iget_nearest_lists_distances(run: Runner, kv: FakeKV) -> None:
    kv.images["cat.png"] = "a cat"
    result = run("-h", "hf", "iget", "--nearest", "3", "cat.png")
    assert result.code == 0
    assert result.out == "3\t" + "cd" * 36 + "\ta cat\n"
    assert kv.image_lookups[-1][:3] == ("cat.png", 3, None)  # the library's ranking, however far


@pytest.mark.parametrize(
    ("count", "message"),
    [("0", "--nearest N must be at least 1"), ("101", "at most 100"), ("x", "--nearest takes a whole number")],
)
def test_iget_nearest_says_what_n_may_be(run: Runner, count: str, message: str) -> None:
    result = run("-h", "hf", "iget", "--nearest", count, "a.png")
    assert result.code == cli.EXIT_USAGE and message in result.err, result.err


def test_iset_takes_empty_metadata_and_says_how(run: Runner, kv: FakeKV) -> None:
    assert run("-h", "hf", "iset", "cat.png", "").code == 0
    assert run("-h", "hf", stdin="iset dog.png ''\n").code == 0
    assert kv.images == {"cat.png": "", "dog.png": ""}
    missing = run("-h", "hf", "iset", "cow.png")
    assert missing.code == cli.EXIT_USAGE and 'give an empty one: ""' in missing.err


class InterruptedKV(FakeKV):
    def set(self, key: str, value: str) -> None:
        raise KeyboardInterrupt

    def get(self, key: str, consistency: str = "linearizable") -> str | None:
        raise KeyboardInterrupt


def test_ctrl_c_names_a_write_only_for_writes(capsys: pytest.CaptureFixture[str]) -> None:
    kv = InterruptedKV()
    assert cli.main(["-h", "hf", "get", "k"], client_factory=lambda hf, t, tls: kv) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted; nothing was changed\n"
    assert cli.main(["-h", "hf", "set", "k", "v"], client_factory=lambda hf, t, tls: kv) == cli.EXIT_INTERRUPTED
    assert "the set may or may not have been applied" in capsys.readouterr().err


def test_ctrl_c_stops_a_piped_script(kv: FakeKV) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run_prompt(InterruptedKV(), stdin=io.StringIO("get k\nset never 1\n"), stdout=out, stderr=err)
    assert (code, err.getvalue()) == (cli.EXIT_INTERRUPTED, "interrupted; nothing was changed\n")


@pytest.mark.parametrize("args", [["iget", "--nearest", "x", "a.png"], ["iget", "--nearest", "2"], ["iset", "a.png"]])
def test_image_usage_errors_exit_2(run: Runner, args: list[str]) -> None:
    assert run("-h", "hf", *args).code == cli.EXIT_USAGE


def test_bad_image_is_one_line_and_exit_2(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", "iset", "missing.png", "meta")
    assert result.code == cli.EXIT_USAGE
    assert result.err == "error: missing.png: no such file\n"
    assert kv.images == {}


# ----------------------------------------------------------------- status


def test_status_json_has_exactly_the_documented_keys(run: Runner) -> None:
    result = run("-h", "hf", "status", "--json")
    assert result.code == 0
    document = json.loads(result.out)
    assert list(document) == ["nodes"]
    assert [n["name"] for n in document["nodes"]] == ["n1", "n2", "n3"]
    for entry in document["nodes"]:
        assert tuple(entry) == cli.STATUS_FIELDS
    assert document["nodes"][0] == {
        "name": "n1",
        "address": "n1:50051",
        "reachable": True,
        "role": "leader",
        "leader": "n1",
        "ballot": "3.0",
        "commit_index": 7,
        "applied_index": 7,
    }


def test_status_table(run: Runner) -> None:
    result = run("-h", "hf", "status")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "ROLE", "LEADER", "BALLOT", "COMMIT", "APPLIED"]
    assert lines[1].split() == ["n1", "n1:50051", "leader", "n1", "3.0", "7", "7"]
    assert "leader: n1" in result.err


def test_status_accepts_etcdctl_write_out(run: Runner) -> None:
    as_json = run("-h", "hf", "status", "--json").out
    for argv in (("-w", "json"), ("--write-out", "json"), ("--write-out=json",)):
        result = run("-h", "hf", "status", *argv)
        assert (result.code, result.out) == (0, as_json)
    table = run("-h", "hf", "status").out
    assert run("-h", "hf", "status", "-w", "table").out == table
    bad = run("-h", "hf", "status", "-w", "yaml")
    assert bad.code == cli.EXIT_USAGE and "table or json" in bad.err


def test_status_without_leader_exits_3(run: Runner, kv: FakeKV) -> None:
    kv.nodes = [node("n1", reachable=False), node("n2", leader=""), node("n3", reachable=False)]
    result = run("-h", "hf", "status")
    assert result.code == cli.EXIT_CLUSTER
    assert result.out.splitlines()[1].split() == ["n1", "n1:50051", "down", "-", "-", "-", "-"]
    assert "only 1 of 3 servers answer" in result.err
    assert json.loads(run("-h", "hf", "status", "--json").out)["nodes"][0]["role"] == "down"


# ----------------------------------------------------------------- prompt


def test_prompt_reads_piped_stdin(run: Runner, kv: FakeKV) -> None:
    script = "set a 'hello   spaced world'\nget a\ndelete a\nget a\n"
    result = run("-h", "hf", stdin=script)
    assert result.out == "hello   spaced world\n"
    assert result.err.splitlines() == ["OK", "deleted", "not found"]
    assert result.code == cli.EXIT_NOT_FOUND
    assert kv.closed


def test_piped_prompt_exits_with_the_first_failure(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", stdin="get missing\nfrobnicate\nset a 1\nget a\n")
    assert result.code == cli.EXIT_NOT_FOUND  # not the last command's 0: a failure is not hidden
    assert result.out == "1\n"  # every line still ran
    assert run("-h", "hf", stdin="frobnicate\nget missing\n").code == cli.EXIT_USAGE


# ------------------------------------------------------- values from files


MULTILINE = "line one\r\n  indented\ttab\n\nlast, no newline"


def test_set_dash_reads_the_value_from_stdin_exactly(
    kv: FakeKV, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MULTILINE.encode())))
    assert cli.main(["-h", "hf", "set", "k", "-"], client_factory=lambda hf, t, tls: kv) == 0
    assert kv.data["k"] == MULTILINE


def test_set_file_reads_the_value_from_a_file(run: Runner, kv: FakeKV, tmp_path: Path) -> None:
    path = tmp_path / "my value.txt"
    path.write_bytes(MULTILINE.encode())
    assert run("-h", "hf", "set", "k", "--file", str(path)).code == 0
    assert kv.data["k"] == MULTILINE
    assert run("-h", "hf", stdin=f"set k2 --file {shlex.quote(str(path))}\n").code == 0  # at the prompt too
    assert kv.data["k2"] == MULTILINE


def test_set_dash_at_the_piped_prompt_is_refused(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", stdin="set k -\n")
    assert result.code == cli.EXIT_USAGE and "use --file PATH" in result.err
    assert kv.data["k"] == "v"


def test_set_file_errors_are_one_line(run: Runner, kv: FakeKV, tmp_path: Path) -> None:
    missing = run("-h", "hf", "set", "k", "--file", str(tmp_path / "nope"))
    assert missing.code == cli.EXIT_USAGE and "cannot read" in missing.err and len(missing.err.splitlines()) == 1
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8 text" in run("-h", "hf", "set", "k", "--file", str(binary)).err
    big = tmp_path / "big"
    big.write_bytes(b"x" * (cli.DEFAULT_MAX_VALUE_BYTES + 1))
    result = run("-h", "hf", "set", "k", "--file", str(big))
    assert result.code == cli.EXIT_USAGE and "largest value allowed" in result.err
    assert kv.data["k"] == "v"


def test_prompt_continues_after_errors(run: Runner, kv: FakeKV) -> None:
    script = "frobnicate\ngte k\nget\n\n# a comment\nget k\n"
    result = run("-h", "hf", stdin=script)
    assert result.err.splitlines() == [
        "error: unknown command 'frobnicate'; type help",
        "error: unknown command 'gte'; did you mean 'get'? type help",
        "error: usage: get <key> [--raw]",
    ]
    assert (result.code, result.out) == (cli.EXIT_USAGE, "v\n")  # the first failure's code


def test_prompt_survives_cluster_errors(run: Runner, kv: FakeKV) -> None:
    kv.fail = Unavailable("cluster unavailable after 1s; tried n1:50051")
    result = run("-h", "hf", stdin="get k\nstatus --json\n")
    assert "tried n1:50051" in result.err
    assert json.loads(result.out)["nodes"][0]["name"] == "n1"


def test_prompt_stops_at_quit(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", stdin="get k\nquit\nset never 1\n")
    assert (result.code, result.out) == (0, "v\n")
    assert "never" not in kv.data
    assert run("-h", "hf", stdin="exit\nset never 1\n").code == 0
    assert "never" not in kv.data


def test_prompt_help_and_image_commands(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", stdin="help\nhelp set\niset cat.png 'a  cat '\niget cat.png\n")
    assert "delete <key>" in result.err
    assert "the value is the rest of the line" in result.err
    assert kv.images == {"cat.png": "a  cat "}
    assert result.out == "a  cat \n"


def test_prompt_stale_flag(run: Runner, kv: FakeKV) -> None:
    run("-h", "hf", "--stale", stdin="get k\n")
    assert kv.reads == [("k", "local")]


def test_run_prompt_with_explicit_streams(kv: FakeKV) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run_prompt(kv, stdin=io.StringIO("get k\r\n"), stdout=out, stderr=err)
    assert (code, out.getvalue(), err.getvalue()) == (0, "v\n", "")


# ----------------------------------------------------- parsing and history


@pytest.mark.parametrize(
    ("line", "name", "args"),
    [
        ("set k v", "set", ["k", "v"]),
        ("  set   k   a  b  ", "set", ["k", "a b"]),
        ("set 'my key' \"a  value \"", "set", ["my key", "a  value "]),
        ('set k "it\'s"', "set", ["k", "it's"]),
        ("set k don\\'t", "set", ["k", "don't"]),
        ("set k --stale", "set", ["k", "--stale"]),  # only the command line takes options after the command
        ("get k", "get", ["k"]),
        ("status --json", "status", ["--json"]),
        ("\tdelete\tk", "delete", ["k"]),
    ],
)
def test_split_line(line: str, name: str, args: list[str]) -> None:
    parsed = cli.split_line(line)
    assert parsed is not None
    assert (parsed[0].name, parsed[1]) == (name, args)


@pytest.mark.parametrize("line", ["", "   ", "# set k v"])
def test_split_line_skips_blanks_and_comments(line: str) -> None:
    assert cli.split_line(line) is None


def test_unbalanced_quote_is_a_usage_error(run: Runner, kv: FakeKV) -> None:
    result = run("-h", "hf", stdin="set k it's\n")
    assert result.code == cli.EXIT_USAGE and "no closing quotation" in result.err
    assert kv.data == {"k": "v"}


def test_history_falls_back_to_memory(tmp_path: Path) -> None:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    assert isinstance(cli._history(tmp_path / "state" / "history"), FileHistory)
    (tmp_path / "file").write_text("")
    assert isinstance(cli._history(tmp_path / "file" / "history"), InMemoryHistory)
    assert isinstance(cli._history(None), InMemoryHistory)


def test_history_is_per_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    one, other = cli.history_path("a/hostfile.txt"), cli.history_path("b/hostfile.txt")
    assert one != other
    assert one == cli.history_path(tmp_path / "a" / "hostfile.txt")  # the same file, however named
    assert one.parent == tmp_path / "state" / "paxoskv"


# ------------------------------------------------------ options and hostfile


def test_dash_h_alone_says_how_to_get_help(run: Runner) -> None:
    result = run("-h")
    assert result.code == cli.EXIT_USAGE
    assert "-h needs a HOSTFILE" in result.err and "--help" in result.err and "expected one argument" not in result.err


@pytest.mark.parametrize("argv", [("help",), ("--help",)])
def test_help_needs_no_hostfile(run: Runner, argv: tuple[str, ...]) -> None:
    result = run(*argv)
    assert result.code == 0 and "usage:" in result.out and "--help" in result.out
    assert run("help", "set").out.startswith("set <key>")


def test_hostfile_from_the_environment(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.HOSTFILE_ENV, "from-env.txt")
    assert run("get", "k").out == "v\n"
    assert run("-h", "given.txt", "get", "k").code == 0
    assert [hostfile for hostfile, _ in run.factory_calls] == ["from-env.txt", "given.txt"]


def test_hostfile_falls_back_to_the_local_cluster(run: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = tmp_path / "local-cluster" / "hostfile.txt"
    local.parent.mkdir()
    local.write_text("n1 127.0.0.1:1\n")
    monkeypatch.setattr(cli, "LOCAL_HOSTFILE", local)
    assert run("get", "k").code == 0
    assert run.factory_calls == [(str(local), cli.DEFAULT_TIMEOUT)]


def test_global_options_after_the_command(run: Runner, kv: FakeKV) -> None:
    assert run("-h", "hf", "get", "k", "--stale", "--timeout", "2.5").out == "v\n"
    assert kv.reads == [("k", "local")]
    assert run.factory_calls[-1] == ("hf", 2.5)
    assert run("-h", "hf", "get", "k", "--timeout=4").code == 0
    assert run.factory_calls[-1] == ("hf", 4.0)
    assert run("-h", "hf", "set", "k", "--", "--stale").code == 0  # after --, words are the command's
    assert kv.data["k"] == "--stale"
    bad = run("-h", "hf", "get", "k", "--timeout", "soon")
    assert bad.code == cli.EXIT_USAGE and "--timeout" in bad.err


# ------------------------------------------------------------- the library


def test_library_refuses_bytes_with_a_type_error() -> None:
    from client import KVClient
    from paxos.common.hostfile import Member

    kv = KVClient([Member("n1", "127.0.0.1", 1)], timeout=0.1)
    with pytest.raises(TypeError, match="value must be str, not bytes; decode bytes first"):
        kv.set("k", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be str, not bytes"):
        kv.get(b"k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata must be str, not int"):
        kv.iset(b"not an image", 7)  # type: ignore[arg-type]
    kv.close()


def test_library_inearest_ranks_however_far_as_the_cli_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from client import KVClient, images
    from paxos.common.hostfile import Member
    from protos import kv_pb2

    sent: list[int] = []
    real_request = kv_pb2.ImageGetRequest

    def request(**fields: Any) -> Any:
        sent.append(fields["max_distance"])
        return real_request(**fields)

    kv = KVClient([Member("n1", "127.0.0.1", 1)], timeout=0.1)
    monkeypatch.setattr(images, "hash_image", lambda image: bytes(images.HASH_BITS // 8))
    monkeypatch.setattr(kv_pb2, "ImageGetRequest", request)

    async def no_matches(*args: Any, **kwargs: Any) -> kv_pb2.SessionReply:
        return kv_pb2.SessionReply(iget=kv_pb2.ImageGetReply())

    monkeypatch.setattr(kv._client, "_retry", no_matches)
    assert kv.inearest(b"img") == [] and kv.iget(b"img") is None
    assert sent == [images.HASH_BITS, DEFAULT_MAX_DISTANCE]  # a ranking goes however far; a match stays near
    kv.close()


def test_version_needs_no_hostfile(run: Runner) -> None:
    result = run("--version")
    assert result.code == 0
    assert result.out.split()[-1] == RELEASE
    assert run.factory_calls == [], "--version asked a cluster"


@pytest.mark.parametrize("argv", [("get", "txt", "--raw"), ("get", "--raw", "txt")])
def test_get_raw_gives_back_exactly_what_set_read_from_stdin(run: Runner, kv: FakeKV, argv: tuple[str, ...]) -> None:
    text = "line1\nline2\n\u00e9\n"
    assert run("-h", "hf", "set", "txt", "-", stdin=text).code == 0
    assert kv.data["txt"] == text
    result = run("-h", "hf", *argv)
    assert (result.code, result.out) == (0, text)
    # Without --raw a newline ends the output, as for any value.
    assert run("-h", "hf", "get", "txt").out == text + "\n"


def test_get_raw_alone_reads_the_key_named_raw(run: Runner, kv: FakeKV) -> None:
    kv.data["--raw"] = "flag-like"
    assert run("-h", "hf", "get", "--raw").out == "flag-like\n"
    assert run("-h", "hf", "get", "a", "b").code == cli.EXIT_USAGE
