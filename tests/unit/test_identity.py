"""Permanent member and cluster ids, and how a data dir keeps them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paxos.common import limits
from paxos.common.hostfile import Member
from paxos.common.identity import bootstrap_ids, cluster_id_for, format_id, parse_id
from paxos.server.service import META_FILE, DataDirError, check_data_dir

MEMBERS = [Member(f"node{i}", "127.0.0.1", 7000 + i) for i in range(5)]


def test_ids_do_not_depend_on_hostfile_order() -> None:
    assert bootstrap_ids(MEMBERS) == bootstrap_ids(list(reversed(MEMBERS)))
    cluster_id, ids = bootstrap_ids(MEMBERS)
    assert len(set(ids.values())) == 5
    assert all(0 < i <= limits.MAX_MEMBER_ID for i in [cluster_id, *ids.values()])


def test_clusters_with_the_same_names_on_other_addresses_differ() -> None:
    elsewhere = [Member(m.name, "127.0.0.1", m.port + 100) for m in MEMBERS]
    assert cluster_id_for(MEMBERS) != cluster_id_for(elsewhere)
    assert bootstrap_ids(MEMBERS)[1] != bootstrap_ids(elsewhere)[1]


def test_id_text_form_round_trips_and_is_checked() -> None:
    assert parse_id(format_id(12345)) == 12345
    for bad in ("0", "ffffffffffffffff", "zz"):
        with pytest.raises(ValueError):
            parse_id(bad)


def test_data_dir_keeps_its_ids_when_the_hostfile_is_reordered_or_moved(tmp_path: Path) -> None:
    first = check_data_dir(tmp_path, "node2", MEMBERS)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["format"] == 2 and meta["member_id"] == format_id(first.member_id)
    assert check_data_dir(tmp_path, "node2", list(reversed(MEMBERS))) == first
    # Addresses may change once the cluster exists: ids stay as stored.
    moved = [Member(m.name, "10.0.0.9", m.port) for m in MEMBERS]
    assert check_data_dir(tmp_path, "node2", moved) == first


def test_data_dir_of_another_server_or_cluster_is_refused(tmp_path: Path) -> None:
    check_data_dir(tmp_path, "node2", MEMBERS)
    with pytest.raises(DataDirError, match="belongs to server 'node2', not 'node3'"):
        check_data_dir(tmp_path, "node3", MEMBERS)
    # A hostfile that grew or shrank since (the cluster scaled) is no
    # reason to refuse: the members are in the log, not the hostfile.
    first = check_data_dir(tmp_path, "node2", MEMBERS)
    assert check_data_dir(tmp_path, "node2", [*MEMBERS, Member("node5", "127.0.0.1", 7005)]) == first


def test_data_dir_of_an_older_format_is_refused_with_advice(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_text(json.dumps({"name": "node2", "cluster": [m.name for m in MEMBERS]}))
    with pytest.raises(DataDirError, match=r"older paxoskv.*fresh --data-dir"):
        check_data_dir(tmp_path, "node2", MEMBERS)


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": 2, "name": "node2", "members": {"node2": "0"}})])
def test_damaged_meta_file_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / META_FILE).write_text(text)
    with pytest.raises(DataDirError, match=r"cannot be read|is damaged"):
        check_data_dir(tmp_path, "node2", MEMBERS)
