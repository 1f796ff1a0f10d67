"""Hostfile parsing: forms, comments, errors with line numbers, lookup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paxos.common.hostfile import HostfileError, Member, find_member, parse_hostfile, parse_hostfile_text
from paxos.common.limits import DEFAULT_PORT


def test_name_alone_and_name_with_address() -> None:
    members = parse_hostfile_text("alpha\nbeta 10.0.0.2:6000\ngamma.example-1 host_3.local:65535\n")
    assert members == [
        Member("alpha", "alpha", DEFAULT_PORT),
        Member("beta", "10.0.0.2", 6000),
        Member("gamma.example-1", "host_3.local", 65535),
    ]
    assert [m.address for m in members] == ["alpha:50051", "10.0.0.2:6000", "host_3.local:65535"]


def test_comments_blank_lines_and_whitespace_are_ignored() -> None:
    text = "# the cluster\n\n   \nalpha   # first\n\t beta\t127.0.0.1:5001  \n# gamma 127.0.0.1:5002\n"
    assert parse_hostfile_text(text) == [Member("alpha", "alpha", DEFAULT_PORT), Member("beta", "127.0.0.1", 5001)]


def test_order_gives_the_node_ids() -> None:
    members = parse_hostfile_text("c\na\nb\n")
    assert [find_member(members, name, "hf") for name in ("c", "a", "b")] == [0, 1, 2]


def test_ipv6_address_in_brackets() -> None:
    [member] = parse_hostfile_text("n1 [::1]:5000\n")
    assert member == Member("n1", "::1", 5000)
    assert member.address == "[::1]:5000"
    [member] = parse_hostfile_text("n2 [fe80::1:2]:443\n")
    assert (member.host, member.port, member.address) == ("fe80::1:2", 443, "[fe80::1:2]:443")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("alpha beta gamma", "expected 'NAME' or 'NAME HOST:PORT'"),
        ("-bad", "not a valid server name"),
        ("bad/name", "not a valid server name"),
        ("x" * 64, "not a valid server name"),
        ("n host", "not HOST:PORT"),
        ("n host:", "not HOST:PORT"),
        ("n :5000", "not HOST:PORT"),
        ("n host:0", "port from 1 to 65535"),
        ("n host:65536", "port from 1 to 65535"),
        ("n host:http", "not HOST:PORT"),
        ("n host:-1", "not HOST:PORT"),
        ("n [::1]", "not HOST:PORT"),
    ],
)
def test_bad_line_is_reported_with_its_line_number(line: str, fragment: str) -> None:
    text = f"# header\nalpha\n\n{line}\nomega\n"
    with pytest.raises(HostfileError) as err:
        parse_hostfile_text(text, "cluster.txt")
    message = str(err.value)
    assert message.startswith("cluster.txt:4: ")
    assert fragment in message


def test_longest_valid_name_is_accepted() -> None:
    [member] = parse_hostfile_text("x" * 63)
    assert member.name == "x" * 63


def test_duplicate_name_names_both_lines() -> None:
    with pytest.raises(HostfileError, match=r"hf:4: server 'alpha' already named on line 1"):
        parse_hostfile_text("alpha\nbeta\n# c\nalpha 10.0.0.9:1\n", "hf")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # and another\n"])
def test_file_without_servers_is_refused(text: str) -> None:
    with pytest.raises(HostfileError, match="hf: no servers listed"):
        parse_hostfile_text(text, "hf")


def test_name_not_in_the_file_lists_the_known_names() -> None:
    members = parse_hostfile_text("alpha\nbeta\n")
    with pytest.raises(HostfileError) as err:
        find_member(members, "gamma", "hosts.txt")
    assert str(err.value) == "hosts.txt: no server named 'gamma' (the hostfile lists: alpha, beta)"


def test_parse_hostfile_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hostfile.txt"
    path.write_text("alpha\nbeta [::1]:7000\n", encoding="utf-8")
    assert parse_hostfile(path) == [Member("alpha", "alpha", DEFAULT_PORT), Member("beta", "::1", 7000)]
    bad = tmp_path / "bad.txt"
    bad.write_text("alpha\nalpha\n", encoding="utf-8")
    with pytest.raises(HostfileError, match="^" + re.escape(f"{bad}:2: ")):
        parse_hostfile(bad)


def test_missing_or_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HostfileError, match="hostfile not found"):
        parse_hostfile(tmp_path / "absent.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00alpha")
    with pytest.raises(HostfileError, match="cannot read hostfile"):
        parse_hostfile(binary)
    with pytest.raises(HostfileError, match="cannot read hostfile"):
        parse_hostfile(tmp_path)  # a directory
