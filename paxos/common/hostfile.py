"""The hostfile: one server per line, ``NAME`` or ``NAME HOST:PORT``.

``#`` starts a comment; blank lines are ignored.  A bare ``NAME`` means the
host is NAME (as on a Docker network) and the port is 50051.  Line order
does not matter: a server's identity is its name, and the member id that a
new cluster derives from it is kept in the server's data dir.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from paxos.common.limits import DEFAULT_PORT

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class HostfileError(ValueError):
    """The hostfile cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_hostfile(path: str | Path) -> list[Member]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HostfileError(f"{path}: hostfile not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HostfileError(f"{path}: cannot read hostfile ({exc})") from None
    return parse_hostfile_text(text, str(path))


def parse_hostfile_text(text: str, source: str = "hostfile") -> list[Member]:
    members: list[Member] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        member = _parse_line(line, f"{source}:{lineno}")
        if member.name in seen:
            raise HostfileError(f"{source}:{lineno}: server {member.name!r} already named on line {seen[member.name]}")
        seen[member.name] = lineno
        members.append(member)
    if not members:
        raise HostfileError(f"{source}: no servers listed")
    return members


def _parse_line(line: str, where: str) -> Member:
    fields = line.split()
    if len(fields) > 2:
        raise HostfileError(f"{where}: expected 'NAME' or 'NAME HOST:PORT', got {line!r}")
    name = fields[0]
    if not _NAME.match(name):
        raise HostfileError(f"{where}: {name!r} is not a valid server name (letters, digits, '.', '_', '-')")
    if len(fields) == 1:
        return Member(name, name, DEFAULT_PORT)
    host, sep, port_text = fields[1].rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HostfileError(f"{where}: {fields[1]!r} is not HOST:PORT with a port from 1 to 65535")
    return Member(name, host, int(port_text))


def find_member(members: list[Member], name: str, source: str) -> int:
    """The position of ``name`` in ``members``; a HostfileError naming the others if absent."""
    for index, member in enumerate(members):
        if member.name == name:
            return index
    names = ", ".join(m.name for m in members)
    raise HostfileError(f"{source}: no server named {name!r} (the hostfile lists: {names})")


def parse_address(name: str, address: str, where: str = "address") -> Member:
    """A member named ``name`` at ``address`` (HOST:PORT), checked as a hostfile line is."""
    return _parse_line(f"{name} {address}", where)


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))
