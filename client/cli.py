"""The paxoskv command line: one command and exit, or an interactive prompt.

``python -m client [-h HOSTFILE] [--timeout SECONDS] [--stale] [COMMAND ...]``

Both modes dispatch through the one ``COMMANDS`` table, so a command behaves
the same typed at the prompt or given on the command line; only the way its
words come differs: ``split_line`` splits a prompt line as a shell would,
``bind_argv`` takes the words the shell already split.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from client.kv import ImageMatch, InvalidRequest, KVClient, KVError, Unavailable, UnknownOutcome
from client.members import SYNC_SECONDS, Member, SyncTimeout
from paxos.common.hostfile import HostfileError, parse_hostfile
from paxos.common.hostfile import Member as Server
from paxos.common.limits import DEFAULT_MAX_VALUE_BYTES, MAX_IMAGE_MATCHES
from paxos.common.tlsfiles import TLS_DIR_ENV, TlsError, mismatch_hint
from paxos.common.versions import RELEASE

if TYPE_CHECKING:  # prompt_toolkit is imported only when a terminal prompt opens
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import History

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_CLUSTER = 3
EXIT_INTERRUPTED = 130

DEFAULT_TIMEOUT = 10.0
HISTORY_HASH_CHARS = 16  # of the hostfile path's sha256 in the history file's name
HOSTFILE_ENV = "PAXOSKV_HOSTFILE"  # used when -h is not given
LOCAL_HOSTFILE = Path("local-cluster") / "hostfile.txt"  # what python -m paxos.local writes; the last resort
STDIN_VALUE = "-"  # set KEY -: the value is all of stdin, as `etcdctl put KEY < FILE`
FILE_OPTION = "--file"  # set KEY --file PATH: the value is the file's contents
PROMPT = "paxoskv> "
STALE_PROMPT = "paxoskv (stale reads)> "
# The keys of one server in `status --json`, always, in this order.
STATUS_FIELDS = ("name", "address", "reachable", "role", "leader", "ballot", "commit_index", "applied_index")
# Then these, from each server that answered.
STATUS_DETAIL_FIELDS = (
    "version",
    "uptime_seconds",
    "log_bytes",
    "data_bytes",
    "last_fsync_seconds",
    "snapshot_index",
    "membership",  # member | learner | joining | founding | removed
    # The cluster version applied there, the highest that server runs, and its
    # data dir's format: all 0 from a release before cluster versions.
    "cluster_version",
    "max_cluster_version",
    "data_format",
)
# The keys of one member in `members --json`, exactly, in this order.
MEMBER_FIELDS = ("name", "address", "voter", "leader", "applied_index")
MEMBERS_USAGE = (
    "members [--json] | members sync [--timeout SECONDS] | members add <name> <host:port> | "
    "members promote <name> | members remove <name>"
)


class KV(Protocol):
    """The part of ``KVClient`` the command line uses (tests pass a fake)."""

    def set(self, key: str, value: str) -> None: ...
    def get(self, key: str, consistency: str = "linearizable") -> str | None: ...
    def delete(self, key: str) -> bool: ...
    def status(self) -> Sequence[Mapping[str, object]]: ...
    def iset(self, image: str, metadata: str) -> str: ...
    def backup(self, path: str, progress: Callable[[int, int], None] | None = None) -> int: ...
    def inearest(
        self, image: str, limit: int = 5, max_distance: int | None = None, consistency: str = "linearizable"
    ) -> list[ImageMatch]: ...
    def members(self) -> list[Member]: ...
    def add_member(self, name: str, address: str) -> list[Member]: ...
    def promote_member(self, name: str) -> list[Member]: ...
    def remove_member(self, name: str) -> list[Member]: ...
    def sync_members(
        self,
        hostfile: str | Path | Sequence[Server],
        timeout: float = SYNC_SECONDS,
        progress: Callable[[str], None] | None = None,
    ) -> list[Member]: ...
    def close(self) -> None: ...


ClientFactory = Callable[[str, float, str | None], KV]


def default_client_factory(hostfile: str, timeout: float, tls_dir: str | None = None) -> KV:
    return KVClient.from_hostfile(hostfile, timeout=timeout, tls_dir=tls_dir)


class UsageError(Exception):
    """A command was typed wrongly; the message says how to type it."""


class EndSession(Exception):
    """``quit`` or ``exit`` was typed."""


@dataclass
class Session:
    kv: KV
    out: TextIO
    err: TextIO
    stale: bool = False
    # Where `set KEY -` reads its value; None when stdin carries the commands themselves.
    stdin: TextIO | None = None
    # The hostfile the client was made from: `members sync` moves the cluster to it.
    hostfile: str | None = None

    def say(self, message: str) -> None:
        """A message for the user (stderr), never mixed with values (stdout)."""
        print(message, file=self.err, flush=True)


Handler = Callable[[Session, list[str]], int]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    handler: Handler
    min_args: int = 0
    max_args: int | None = 0  # None: any number
    rest_of_line: bool = False  # the last argument takes the rest of the line, spaces and all
    writes: bool = False  # interrupted, it may or may not have been applied


# ----------------------------------------------------------------- handlers


def _set(s: Session, args: list[str]) -> int:
    if len(args) == 3:  # set KEY --file PATH
        key, value = args[0], _read_value_file(args[2])
    elif args[1] == STDIN_VALUE:
        if s.stdin is None:
            raise UsageError("'set KEY -' reads the value from stdin, which holds the commands here; use --file PATH")
        key, value = args[0], _read_value_stream(s.stdin)
    else:
        key, value = args
    s.kv.set(key, value)
    s.say("OK")
    return EXIT_OK


def _decode_value(data: bytes, source: str) -> str:
    if len(data) > DEFAULT_MAX_VALUE_BYTES:
        raise UsageError(f"{source} holds more than {DEFAULT_MAX_VALUE_BYTES} bytes, the largest value allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not UTF-8 text (byte {exc.start}); values are text") from None


def _read_value_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(DEFAULT_MAX_VALUE_BYTES + 1)  # a byte over the limit is enough to refuse it
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _decode_value(data, path)


def _read_value_stream(stream: TextIO) -> str:
    """The rest of ``stream`` exactly (no newline translation), at most one byte over the limit."""
    binary = getattr(stream, "buffer", None)
    if binary is not None:
        return _decode_value(binary.read(DEFAULT_MAX_VALUE_BYTES + 1), "stdin")
    # Each character is at least one byte, so this many characters suffice to see the limit passed.
    return _decode_value(stream.read(DEFAULT_MAX_VALUE_BYTES + 1).encode("utf-8", "surrogatepass"), "stdin")


RAW = "--raw"  # get KEY --raw: the value byte for byte, with no newline added


def _get(s: Session, args: list[str]) -> int:
    # A lone "--raw" is a key: `get --raw` reads the key named "--raw".
    raw = len(args) == 2 and RAW in args
    keys = [a for a in args if a != RAW] if raw else args
    if len(keys) != 1:
        raise UsageError(f"usage: get <key> [{RAW}]")
    value = s.kv.get(keys[0], consistency="local" if s.stale else "linearizable")
    if value is None:
        s.say("not found")
        return EXIT_NOT_FOUND
    if not raw:
        print(value, file=s.out, flush=True)
        return EXIT_OK
    # As UTF-8 whatever the terminal's encoding: the bytes `set KEY -` read.
    s.out.flush()
    binary = getattr(s.out, "buffer", None)
    if binary is None:
        s.out.write(value)
        s.out.flush()
    else:
        binary.write(value.encode("utf-8"))
        binary.flush()
    return EXIT_OK


def _delete(s: Session, args: list[str]) -> int:
    if s.kv.delete(args[0]):
        s.say("deleted")
        return EXIT_OK
    s.say("not found")
    return EXIT_NOT_FOUND


def _status_format(args: list[str]) -> str:
    """``--json``, or etcdctl's ``-w``/``--write-out`` ``table|json``: the output format."""
    match args:
        case []:
            return "table"
        case ["--json"]:
            return "json"
        case ["-w" | "--write-out", ("table" | "json") as chosen]:
            return chosen
        case [("--write-out" | "-w") as flag, other]:
            raise UsageError(f"status {flag} takes table or json, not {other!r}")
        case [flag] if flag.startswith("--write-out="):
            return _status_format(["--write-out", flag.split("=", 1)[1]])
        case _:
            raise UsageError(f"status takes --json or -w table|json, not {' '.join(args)!r}")


def _status(s: Session, args: list[str]) -> int:
    as_json = _status_format(args) == "json"
    answers = s.kv.status()
    nodes = [
        {field: node[field] for field in STATUS_FIELDS} | {f: node[f] for f in STATUS_DETAIL_FIELDS if f in node}
        for node in answers
    ]
    if as_json:
        print(json.dumps({"nodes": nodes}, indent=2), file=s.out, flush=True)
    else:
        print(format_status_table(nodes), file=s.out, flush=True)
    leaders = find_leaders(nodes)
    if not leaders:
        errors = " ".join(str(node.get("error", "")) for node in answers)
        hint = mismatch_hint(errors, getattr(s.kv, "tls_dir", None) is not None)
        if hint is not None and not any(node["reachable"] for node in nodes):
            s.say(f"no server answers: {hint}")
        else:
            s.say(_no_leader_reason(nodes))
        return EXIT_CLUSTER
    if not as_json:
        s.say(f"leader: {', '.join(leaders)}" + (" (competing; one will step down)" if len(leaders) > 1 else ""))
    return EXIT_OK


def _backup(s: Session, args: list[str]) -> int:
    path = args[0]
    if s.err.isatty():
        from tqdm import tqdm  # only for a person watching

        with tqdm(total=0, unit="B", unit_scale=True, desc="backup", file=s.err, leave=False) as bar:

            def progress(done: int, estimate: int) -> None:
                bar.total = max(bar.total or 0, estimate)
                bar.update(done - bar.n)

            index = s.kv.backup(path, progress)
    else:
        index = s.kv.backup(path)
    size = Path(path).stat().st_size
    print(f"{index}", file=s.out, flush=True)
    s.say(f"backup of every slot up to {index} written to {path} ({size} bytes)")
    return EXIT_OK


def _iset(s: Session, args: list[str]) -> int:
    from client.images import ImageError  # numpy and friends load only for image commands

    if len(args) < 2:
        raise UsageError('iset needs metadata after the image path; for none, give an empty one: ""')
    path, metadata = args
    try:
        digest = s.kv.iset(path, metadata)
    except ImageError as exc:
        raise UsageError(str(exc)) from None
    s.say(f"OK (hash {digest})")
    return EXIT_OK


def _iget(s: Session, args: list[str]) -> int:
    from client.images import DEFAULT_MAX_DISTANCE, ImageError  # numpy and friends load only here

    nearest = None
    if args[0] == "--nearest":
        if len(args) != 3:
            raise UsageError("usage: iget [--nearest N] <image>")
        nearest, args = _nearest_count(args[1]), args[2:]
    if len(args) != 1:
        raise UsageError("usage: iget [--nearest N] <image>")
    consistency = "local" if s.stale else "linearizable"
    try:
        if nearest is None:  # the one likely match, within the library's match distance
            found = s.kv.inearest(args[0], limit=1, max_distance=DEFAULT_MAX_DISTANCE, consistency=consistency)
        else:  # a ranking, however far: the library's default
            found = s.kv.inearest(args[0], limit=nearest, consistency=consistency)
    except ImageError as exc:
        raise UsageError(str(exc)) from None
    if not found:
        s.say("not found")
        return EXIT_NOT_FOUND
    if nearest is None:
        print(found[0].metadata, file=s.out, flush=True)
    else:
        for match in found:
            print(f"{match.distance}\t{match.hash}\t{match.metadata}", file=s.out, flush=True)
    return EXIT_OK


def _nearest_count(text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"--nearest takes a whole number N, not {text!r}")
    count = int(text)
    if not 1 <= count <= MAX_IMAGE_MATCHES:
        raise UsageError(f"--nearest N must be at least 1 and at most {MAX_IMAGE_MATCHES}, got {count}")
    return count


def _members(s: Session, args: list[str]) -> int:
    match args:
        case [] | ["--json"]:
            return _members_list(s, as_json=bool(args))
        case ["sync", *options]:
            return _members_sync(s, _sync_timeout(options))
        case ["add", name, address]:
            done = f"{name} added as a learner; it becomes a voter with: members promote {name} (once it has caught up)"
            return _members_change(s, done, s.kv.add_member, name, address)
        case ["promote", name]:
            return _members_change(s, f"{name} is a voter", s.kv.promote_member, name)
        case ["remove", name]:
            return _members_change(s, f"{name} removed", s.kv.remove_member, name)
        case _:
            raise UsageError(f"usage: {MEMBERS_USAGE}")


def _members_list(s: Session, as_json: bool) -> int:
    found = s.kv.members()
    if as_json:
        rows = [{field: getattr(m, field) for field in MEMBER_FIELDS} for m in found]
        print(json.dumps({"members": rows}, indent=2), file=s.out, flush=True)
        return EXIT_OK
    print(format_members_table(found), file=s.out, flush=True)
    leaders = [m.name for m in found if m.leader]
    s.say(f"leader: {', '.join(leaders)}" if leaders else "no leader in this view: it may lag behind a change")
    return EXIT_OK


def _sync_timeout(options: list[str]) -> float:
    """``members sync``'s ``--timeout SECONDS`` (or ``--timeout=SECONDS``): how long the whole sync may take."""
    match options:
        case []:
            return SYNC_SECONDS
        case ["--timeout", text]:
            pass
        case [option] if option.startswith("--timeout="):
            text = option.partition("=")[2]
        case _:
            raise UsageError("usage: members sync [--timeout SECONDS]")
    try:
        return _positive_seconds(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"members sync --timeout: {exc}") from None


def _members_sync(s: Session, timeout: float) -> int:
    if s.hostfile is None:
        raise UsageError("members sync moves the cluster to the client's hostfile, and this session has none")
    try:
        targets = parse_hostfile(s.hostfile)
    except HostfileError as exc:
        raise UsageError(str(exc)) from None
    steps: list[str] = []

    def progress(message: str) -> None:
        steps.append(message)
        s.say(message)

    try:
        after = s.kv.sync_members(targets, timeout=timeout, progress=progress)
    except SyncTimeout as exc:
        s.say(f"error: {exc}")
        return EXIT_CLUSTER
    except InvalidRequest as exc:
        made = "; the steps above stand (see 'members')" if len(steps) > 1 else ""
        s.say(f"error: refused: {exc}{made}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        s.say("interrupted; the step under way may or may not have been made: see 'members', or run sync again")
        return EXIT_INTERRUPTED
    print(format_members_table(after), file=s.out, flush=True)
    return EXIT_OK


def _members_change(s: Session, done: str, change: Callable[..., list[Member]], *args: str) -> int:
    try:
        after = change(*args)
    except KeyboardInterrupt:
        s.say("interrupted; the change may or may not have been made: check with 'members'")
        return EXIT_INTERRUPTED
    print(format_members_table(after), file=s.out, flush=True)
    s.say(done)
    return EXIT_OK


def _help(s: Session, args: list[str]) -> int:
    if args:
        command = lookup(args[0])
        s.say(f"{command.usage}\n    {command.summary}")
    else:
        s.say(commands_help() + "\nA line starting with '#' is a comment.")
    return EXIT_OK


def _quit(s: Session, args: list[str]) -> int:
    raise EndSession


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "set",
            "set <key> <value> | - | --file <path>",
            "store value under key; the value is the rest of the line, "
            "or all of stdin (-, command line only), or a file's contents (--file)",
            _set,
            min_args=2,
            max_args=2,
            rest_of_line=True,
            writes=True,
        ),
        Command(
            "get",
            "get <key> [--raw]",
            "print the value of key (exit 1 if there is none); --raw prints it byte for byte, adding no newline",
            _get,
            1,
            2,
        ),
        Command("delete", "delete <key>", "remove key (exit 1 if there was no value)", _delete, 1, 1, writes=True),
        Command(
            "status",
            "status [--json | -w table|json]",
            "each server's role, leader, ballot and log indexes",
            _status,
            0,
            2,
        ),
        Command(
            "iset",
            "iset <image path> <metadata>",
            'store metadata for a photo; the metadata is the rest of the line ("" for none)',
            _iset,
            min_args=1,
            max_args=2,
            rest_of_line=True,
            writes=True,
        ),
        Command(
            "iget",
            "iget [--nearest N] <image path>",
            "print the metadata of the stored photo that matches this one, even edited (exit 1 if none); "
            "--nearest N lists the N nearest with their distances in bits, however far",
            _iget,
            1,
            3,
        ),
        Command(
            "backup",
            "backup <file>",
            "write a consistent snapshot of the whole cluster to file; prints the slot it covers "
            "(restore with: python -m paxos restore FILE -h HOSTFILE -n NAME --data-dir DIR)",
            _backup,
            1,
            1,
        ),
        Command(
            "members",
            "members [--json | sync | add | promote | remove]",
            "list the cluster's members: voter or learner, leader, applied index (--json for scripts); "
            "'members sync [--timeout SECONDS]' adds the hostfile's new servers (started with --join) and "
            "removes the members it no longer lists, one step at a time, waiting for each learner to catch up "
            f"(the timeout is for the whole sync, default {SYNC_SECONDS:g}); "
            "'members add <name> <host:port>' (as a learner), 'members promote <name>', "
            "'members remove <name>': one step each",
            _members,
            0,
            3,
        ),
        Command("help", "help [command]", "list the commands, or explain one", _help, 0, 1),
        Command("quit", "quit", "leave the prompt (also: exit, Ctrl-D; Ctrl-C only cancels the line)", _quit),
        Command("exit", "exit", "leave the prompt", _quit),
    )
}


# ------------------------------------------------------------------ helpers


def find_leaders(nodes: Sequence[Mapping[str, object]]) -> list[str]:
    """Names of the reachable servers that say they are the leader."""
    return [str(n["name"]) for n in nodes if n["reachable"] and n["role"] == "leader"]


def _no_leader_reason(nodes: Sequence[Mapping[str, object]]) -> str:
    up, majority = sum(1 for n in nodes if n["reachable"]), len(nodes) // 2 + 1
    if up < majority:
        return f"no leader: only {up} of {len(nodes)} servers answer; start servers until {majority} are up"
    return "no leader yet: an election may be under way; try again in a moment"


def format_members_table(members: Sequence[Member]) -> str:
    header = ("NAME", "ADDRESS", "ROLE", "LEADER", "APPLIED")
    rows: list[tuple[str, ...]] = [header]
    for m in members:
        role = "voter" if m.voter else "learner"
        rows.append((m.name, m.address, role, "*" if m.leader else "", str(m.applied_index)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_status_table(nodes: Sequence[Mapping[str, object]]) -> str:
    header = ("NAME", "ADDRESS", "ROLE", "LEADER", "BALLOT", "COMMIT", "APPLIED")
    rows: list[tuple[str, ...]] = [header]
    for n in nodes:
        if n["reachable"]:
            cells = (n["leader"] or "-", n["ballot"] or "-", n["commit_index"], n["applied_index"])
        else:
            cells = ("-", "-", "-", "-")
        role = n["role"]
        if n.get("membership") in ("learner", "joining", "founding", "removed"):
            role = f"{role} ({n['membership']})"
        rows.append(tuple(str(c) for c in (n["name"], n["address"], role, *cells)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def commands_help() -> str:
    width = max(len(c.usage) for c in COMMANDS.values())
    return "\n".join(f"  {c.usage.ljust(width)}  {c.summary}" for c in COMMANDS.values())


def lookup(name: str) -> Command:
    command = COMMANDS.get(name)
    if command is not None:
        return command
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(f"unknown command {name!r}; {hint}type help")


def _value_from_file(command: Command, args: list[str]) -> bool:
    """``set KEY --file PATH``: three words that must not be joined into one value."""
    return command.name == "set" and len(args) == 3 and args[1] == FILE_OPTION


def _check_arity(command: Command, args: list[str]) -> list[str]:
    if _value_from_file(command, args):
        return args
    too_many = command.max_args is not None and len(args) > command.max_args
    if len(args) < command.min_args or too_many:
        raise UsageError(f"usage: {command.usage}")
    return args


def split_line(line: str) -> tuple[Command, list[str]] | None:
    """A prompt line as (command, arguments); None for a blank line or comment.

    Words are split as a shell splits them (``shlex``): quotes group words
    and are removed, a backslash escapes.  Then the line binds exactly as the
    same words given on the command line (``bind_argv``), so surplus words of
    a value are joined with one space; quote a value to keep its spacing.
    """
    if line.lstrip().startswith("#"):
        return None
    try:
        words = shlex.split(line)
    except ValueError as exc:  # shlex says "No closing quotation" or "No escaped character"
        raise UsageError(f"{str(exc).lower()}; quote a value holding ' or \" with the other quote") from None
    if not words:
        return None
    return bind_argv(words)


def bind_argv(argv: Sequence[str]) -> tuple[Command, list[str]]:
    """Command-line words as (command, arguments).

    For a ``rest_of_line`` command, surplus words are joined with one space,
    so ``set k hello world`` stores "hello world" as at the prompt.
    """
    command = lookup(argv[0])
    args = list(argv[1:])
    if _value_from_file(command, args):
        return command, args
    if command.rest_of_line and command.max_args is not None and len(args) > command.max_args:
        keep = command.max_args - 1
        args = [*args[:keep], " ".join(args[keep:])]
    return command, _check_arity(command, args)


def execute(session: Session, command: Command, args: list[str]) -> int:
    """Run one command; errors and Ctrl-C become one line on stderr and an exit code."""
    try:
        return command.handler(session, args)
    except KeyboardInterrupt:
        if command.writes:
            session.say(f"interrupted; the {command.name} may or may not have been applied: check before retrying")
        else:
            session.say("interrupted; nothing was changed")
        return EXIT_INTERRUPTED
    except UsageError as exc:
        session.say(f"error: {exc}")
        return EXIT_USAGE
    except InvalidRequest as exc:
        session.say(f"error: invalid request, nothing was changed: {exc}")
        return EXIT_USAGE
    except UnknownOutcome as exc:
        session.say(f"error: {_labelled('outcome unknown', exc)}; read the key to see whether the write happened")
        return EXIT_CLUSTER
    except Unavailable as exc:
        hint = mismatch_hint(str(exc), getattr(session.kv, "tls_dir", None) is not None)
        if hint is not None:
            session.say(f"error: {hint}: {_labelled('cluster unavailable', exc)}")
        else:
            session.say(
                f"error: {_labelled('cluster unavailable', exc)}; are the servers running? (check with 'status')"
            )
        return EXIT_CLUSTER
    except KVError as exc:
        session.say(f"error: the cluster refused the request: {exc}")
        return EXIT_CLUSTER


def _labelled(label: str, exc: Exception) -> str:
    """The exception's message, starting with ``label`` unless it already says so."""
    message = str(exc)
    return message if label in message else f"{label}: {message}"


def run_line(session: Session, line: str) -> int:
    """Run one prompt line; raises EndSession on quit/exit."""
    try:
        parsed = split_line(line)
    except UsageError as exc:
        session.say(f"error: {exc}")
        return EXIT_USAGE
    if parsed is None:
        return EXIT_OK
    return execute(session, *parsed)


# ------------------------------------------------------------------- prompt


def run_prompt(
    kv: KV,
    stale: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    history: Path | None = None,
    hostfile: str | None = None,
) -> int:
    """Read and run commands until quit, exit or end of input.

    On a terminal this is a prompt_toolkit prompt with completion and the
    history kept in ``history`` (see ``history_path``), and returns 0.  Otherwise lines are read plainly from stdin,
    every line is run, and the result is the exit code of the first command
    that failed (0 if none did), so a failure early in a script is not hidden
    by a success after it.
    """
    stdin = stdin or sys.stdin
    session = Session(kv, stdout or sys.stdout, stderr or sys.stderr, stale, hostfile=hostfile)
    if stdin.isatty():
        _interactive_loop(session, history)
        return EXIT_OK
    return _piped_loop(session, stdin)


def _piped_loop(session: Session, stdin: TextIO) -> int:
    code = EXIT_OK
    try:
        for line in stdin:
            result = run_line(session, line.rstrip("\r\n"))
            if result == EXIT_INTERRUPTED:  # Ctrl-C stops a script, as in a shell
                return result
            code = code or result
    except EndSession:
        pass
    except KeyboardInterrupt:  # between commands
        session.say("interrupted")
        return EXIT_INTERRUPTED
    return code


def _interactive_loop(session: Session, history: Path | None) -> None:
    from prompt_toolkit.patch_stdout import patch_stdout

    prompt = _make_prompt_session(history)
    text = STALE_PROMPT if session.stale else PROMPT
    # Other threads (paxos.local reporting a server that exited) print above the prompt, not into the line.
    with patch_stdout():
        _read_eval_loop(session, prompt, text)


def _read_eval_loop(session: Session, prompt: PromptSession[str], text: str) -> None:
    while True:
        try:
            line = prompt.prompt(text)
        except KeyboardInterrupt:  # Ctrl-C: drop this line, keep the prompt
            continue
        except EOFError:  # Ctrl-D
            return
        try:
            run_line(session, line)  # Ctrl-C while a command runs ends it alone, reported by execute
        except EndSession:
            return


def _make_prompt_session(history: Path | None) -> PromptSession[str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import NestedCompleter

    nested: dict[str, object] = dict.fromkeys(COMMANDS)
    nested["status"] = {"--json": None, "-w": {"table": None, "json": None}}
    nested["members"] = {"--json": None, "sync": {"--timeout": None}, "add": None, "promote": None, "remove": None}
    nested["help"] = dict.fromkeys(COMMANDS)
    return PromptSession(history=_history(history), completer=NestedCompleter.from_nested_dict(nested))


def history_path(hostfile: str | Path) -> Path:
    """The prompt history of the cluster that ``hostfile`` names, under the user's state directory.

    One file per hostfile (by a hash of its resolved path), so the commands
    typed against one cluster are not offered at the prompt of another.
    """
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha256(str(Path(hostfile).resolve()).encode("utf-8", "surrogatepass")).hexdigest()
    return Path(state) / "paxoskv" / f"history-{digest[:HISTORY_HASH_CHARS]}"


def _history(path: Path | None) -> History:
    """History kept in ``path``, or in memory when there is none or it is not writable."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


# --------------------------------------------------------------- entry point


_NO_VALUE = "\0no value"  # -h given without a HOSTFILE after it


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or _prog_name(),
        add_help=False,  # -h is the hostfile, as in the server's command line
        usage=(
            "%(prog)s [-h HOSTFILE] [--tls-dir DIR] [--timeout SECONDS] [--stale] [COMMAND ...]\n"
            "       %(prog)s --help    (or: %(prog)s help [COMMAND]; -h is the hostfile, not help)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Talk to a paxoskv cluster.  With a COMMAND, run it and exit; without one, open an\n"
            "interactive prompt (or, when stdin is not a terminal, run the commands read from it,\n"
            "one per line, and exit with the code of the first that failed, or 0).\n"
            "--timeout and --stale may also follow the COMMAND; after '--' every word is the COMMAND's."
        ),
        epilog=_epilog(prog or _prog_name()),
    )
    parser.add_argument(
        "-h",
        "--hostfile",
        nargs="?",
        const=_NO_VALUE,
        metavar="HOSTFILE",
        help=(
            "file listing the servers: 'NAME' or 'NAME HOST:PORT' per line; default: "
            f"${HOSTFILE_ENV}, else ./{LOCAL_HOSTFILE} when it exists (written by python -m paxos.local)"
        ),
    )
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help=(
            f"connect with TLS, trusting DIR/ca.pem and presenting DIR/client.pem; commands that change "
            "members or take a backup present DIR/admin.pem when DIR has it, else client.pem (which servers "
            f"refuse for them); default: ${TLS_DIR_ENV}, else a tls directory beside the hostfile when there "
            "is one (python -m paxos.local makes it), else plaintext"
        ),
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a request after this long, retrying meanwhile (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--stale",
        action="store_true",
        help="get reads one server's copy without asking the leader: faster, but possibly stale",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {RELEASE}", help="show the version and exit")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="COMMAND ...", help="one of the commands below, with its arguments"
    )
    return parser


def hoist_options(opts: argparse.Namespace) -> None:
    """Move ``--stale`` and ``--timeout SECONDS`` found after the command into ``opts``.

    ``get k --stale`` then means ``--stale get k``.  A ``--`` ends this: the
    words after it are the command's, so ``set k -- --stale`` stores "--stale".
    ``members sync`` keeps its own ``--timeout`` (for the whole sync).
    """
    words, kept = list(opts.command[1:]), list(opts.command[:1])
    own_timeout = opts.command[:2] == ["members", "sync"]
    while words:
        word = words.pop(0)
        if word == "--":
            kept.extend(words)
            break
        if word == "--stale":
            opts.stale = True
        elif (word == "--timeout" or word.startswith("--timeout=")) and not own_timeout:
            text = word.partition("=")[2] if "=" in word else (words.pop(0) if words else "")
            try:
                opts.timeout = _positive_seconds(text)
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"--timeout: {exc}") from None
        else:
            kept.append(word)
    opts.command = kept


def find_hostfile(given: str | None) -> str:
    """The hostfile to use: -h, else $PAXOSKV_HOSTFILE, else ./local-cluster/hostfile.txt if it exists."""
    if given == _NO_VALUE:
        raise UsageError("-h needs a HOSTFILE after it (-h is the hostfile here; for help use --help or 'help')")
    if given:
        return given
    from_env = os.environ.get(HOSTFILE_ENV, "")
    if from_env:
        return from_env
    if LOCAL_HOSTFILE.is_file():
        return str(LOCAL_HOSTFILE)
    raise UsageError(
        f"no hostfile: give -h HOSTFILE, set {HOSTFILE_ENV}, or start a local cluster with "
        f"'python -m paxos.local' (it writes {LOCAL_HOSTFILE}); --help explains more"
    )


def _epilog(prog: str) -> str:
    return f"""commands:
{commands_help()}

exit status:
  0  done
  1  key not found (get, delete)
  2  usage error or bad input: unknown command, missing arguments, bad hostfile
     or TLS directory, key empty or over 1024 bytes, value too large; a
     membership change refused: unknown member, a name or address already a
     member, a server not started with --join or from another cluster, the
     last voter, a removal leaving the voters that answer short of a quorum;
     under TLS, a member change or backup without admin.pem; nothing was
     changed (members sync: by that step)
  3  no answer in time: the cluster is unavailable (the message lists the
     addresses tried, and says so when TLS settings do not match the
     servers'), a write's outcome is unknown (it may or may not have been
     applied), status found no leader, or members sync did not finish within
     its --timeout (the configuration is a valid one on the way; run it again)

values go to stdout, messages to stderr.

examples:
  {prog} -h hostfile.txt set greeting hello world
  {prog} -h hostfile.txt get greeting            # prints: hello world
  {prog} -h hostfile.txt set config - < app.conf # the value is all of stdin
  {prog} -h hostfile.txt set config --file app.conf
  {prog} -h hostfile.txt --stale get greeting    # may be out of date
  {prog} -h hostfile.txt status --json
  {prog} -h hostfile.txt members sync            # after adding or removing lines in hostfile.txt
  {prog} -h hostfile.txt --tls-dir certs get greeting  # TLS (python -m paxos.certs)
  {prog} -h hostfile.txt                         # interactive prompt
  printf 'set a 1\\nget a\\n' | {prog} -h hostfile.txt"""


def _prog_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m client" if name in ("", "__main__.py", "-c") else name


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return seconds


def main(argv: Sequence[str] | None = None, client_factory: ClientFactory = default_client_factory) -> int:
    """Run the command line and return its exit code (tests pass a fake client_factory)."""
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on errors, 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if opts.command[:1] == ["help"] and not (opts.hostfile and opts.hostfile != _NO_VALUE):
        return _offline_help(parser, opts.command[1:])
    try:
        hoist_options(opts)
        bound = bind_argv(opts.command) if opts.command else None
        opts.hostfile = find_hostfile(opts.hostfile)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        kv = client_factory(opts.hostfile, opts.timeout, opts.tls_dir)
    except (HostfileError, TlsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if bound is None:
            return _open_prompt(kv, opts)
        session = Session(kv, sys.stdout, sys.stderr, opts.stale, stdin=sys.stdin, hostfile=opts.hostfile)
        return _one_shot(session, *bound)
    finally:
        kv.close()


def _offline_help(parser: argparse.ArgumentParser, args: list[str]) -> int:
    """``help`` or ``help COMMAND`` given without a hostfile: no cluster is needed to explain."""
    if not args:
        parser.print_help()
        return EXIT_OK
    try:
        command = lookup(args[0])
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{command.usage}\n    {command.summary}")
    return EXIT_OK


def _one_shot(session: Session, command: Command, args: list[str]) -> int:
    try:
        return execute(session, command, args)
    except EndSession:
        return EXIT_OK
    except KeyboardInterrupt:  # before or after the command ran
        session.say("interrupted")
        return EXIT_INTERRUPTED


def _open_prompt(kv: KV, opts: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        stale = " get reads may be stale (--stale);" if opts.stale else ""
        print(
            f"paxoskv: servers from {opts.hostfile};{stale} type help; Ctrl-C cancels a line, quit or Ctrl-D leaves",
            file=sys.stderr,
        )
    return run_prompt(kv, stale=opts.stale, history=history_path(opts.hostfile), hostfile=opts.hostfile)
