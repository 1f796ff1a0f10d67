"""TLS on servers in this process: serving only TLS, who gets in with which certificate, rotation, the health check.

The servers (tests/harness/inprocess.py) are reached over loopback with
ordinary clients; the tests that only connect, read and write share one TLS
cluster, those that rotate certificates get one each.  The certificates and
proofs with plain calls are tests/unit/test_tls.py;
tests/processes/test_hostile_peers_tls.py attacks real processes.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import InvalidRequest, KVClient, Unavailable, cli
from paxos import certs
from paxos.common.tlsfiles import (
    CA_CERT_FILE,
    KeyPair,
    cert_file,
    client_credentials,
    key_file,
    mismatch_hint,
)
from paxos.server import healthcheck
from paxos.server.tlsaccess import CLIENT_AUTH_CERT, CLIENT_AUTH_NONE
from protos import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc
from tests.harness.inprocess import InProcessCluster, in_process_cluster
from tests.harness.polling import wait_until

# ------------------------------------------------------ servers with TLS


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"size": 3, "tls": True}


def _raw_get(cluster: InProcessCluster, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(cluster.members[0].address, credentials) as channel:
        try:
            kv_pb2_grpc.KVStub(channel).Get(kv_pb2.GetRequest(key="k", consistency=kv_pb2.LOCAL), timeout=5)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_clients_with_the_client_certificate_are_served(shared_cluster: InProcessCluster) -> None:
    assert shared_cluster.tls_dir is not None
    with KVClient(shared_cluster.members, timeout=10, tls_dir=shared_cluster.tls_dir) as kv:
        kv.set("served", "v")
        assert kv.get("served") == "v"
        assert kv.delete("served") is True
        assert sum(1 for n in kv.status() if n["role"] == "leader") == 1
    # Long enough for attempts to fail on the handshake, not only on time.
    with pytest.raises(Unavailable) as caught, KVClient(shared_cluster.members, timeout=5) as plain:
        plain.get("k")
    assert "requires TLS" in str(mismatch_hint(str(caught.value), using_tls=False))


def test_a_member_certificate_does_not_open_the_client_api(shared_cluster: InProcessCluster) -> None:
    assert shared_cluster.tls_dir is not None
    member = KeyPair.load(shared_cluster.tls_dir, "s1").channel_credentials()
    before = _refused_for_no_client_certificate(shared_cluster)
    assert _raw_get(shared_cluster, member) == grpc.StatusCode.PERMISSION_DENIED
    assert _raw_get(shared_cluster, client_credentials(shared_cluster.tls_dir)) == grpc.StatusCode.OK
    assert _refused_for_no_client_certificate(shared_cluster) == before + 1


def _refused_for_no_client_certificate(cluster: InProcessCluster) -> int:
    refusals = cluster.call(lambda: dict(cluster.servers["s0"].client_refusals.counts))
    return sum(n for (_, reason), n in refusals.items() if reason == "no client certificate")


def test_a_client_certificate_does_not_open_a_peer_stream(shared_cluster: InProcessCluster) -> None:
    assert shared_cluster.tls_dir is not None
    server = shared_cluster.servers["s0"]
    with grpc.secure_channel(shared_cluster.members[0].address, client_credentials(shared_cluster.tls_dir)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            peer_pb2_grpc.PeerStub(channel).Stream(iter([peer_pb2.PeerMessage(sender=1)]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    reasons = {reason for _, reason in server.refusals.counts}
    assert "peer stream without a member certificate" in reasons


def test_the_incarnation_question_needs_a_member_certificate(shared_cluster: InProcessCluster) -> None:
    assert shared_cluster.tls_dir is not None
    # The leader hears from every follower (followers do not talk to each other).
    leader = wait_until(shared_cluster.leader, "a leader")
    follower = next(m.name for m in shared_cluster.members if m.name != leader)
    server, asker = shared_cluster.servers[leader], shared_cluster.servers[follower]
    wait_until(lambda: server.replica.incarnations.recorded_for([asker.node_id]), f"{leader} to hear from {follower}")
    question = peer_pb2.IncarnationRequest(name=follower, member_id=asker.node_id)
    address = next(m.address for m in shared_cluster.members if m.name == leader)
    with grpc.secure_channel(address, client_credentials(shared_cluster.tls_dir)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            peer_pb2_grpc.PeerStub(channel).Incarnation(question, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    member = KeyPair.load(shared_cluster.tls_dir, follower).channel_credentials()
    with grpc.secure_channel(address, member) as channel:
        reply = peer_pb2_grpc.PeerStub(channel).Incarnation(question, timeout=5)
    assert not reply.fresh and reply.cluster_id == server.identity.cluster_id
    assert reply.recorded == asker.identity.incarnation


def test_any_tls_client_is_served_with_client_auth_none(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3, tls_dir=tmp_path / "tls", client_auth=CLIENT_AUTH_NONE) as cluster:
        wait_until(cluster.leader, "a leader, the peers proving membership by signature")
        ca_only = grpc.ssl_channel_credentials((tmp_path / "tls" / CA_CERT_FILE).read_bytes())
        assert _raw_get(cluster, ca_only) == grpc.StatusCode.OK
        with KVClient(cluster.members, timeout=10, tls_dir=tmp_path / "tls") as kv:
            kv.set("k", "v")
            assert kv.get("k") == "v"
        with grpc.secure_channel(cluster.members[0].address, ca_only) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                peer_pb2_grpc.PeerStub(channel).Stream(iter([peer_pb2.PeerMessage(sender=1)]), timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def _raw_admin_calls(address: str, credentials: grpc.ChannelCredentials) -> list[grpc.StatusCode]:
    """What ChangeMembers and Backup, called without the admin's proof, come back with."""
    codes = []
    with grpc.secure_channel(address, credentials) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for call in (
            lambda: stub.ChangeMembers(kv_pb2.ChangeMembersRequest(remove="s2"), timeout=5),
            lambda: list(stub.Backup(kv_pb2.BackupRequest(), timeout=5)),
        ):
            try:
                call()
            except grpc.RpcError as err:
                codes.append(err.code())  # type: ignore[attr-defined]
            else:
                codes.append(grpc.StatusCode.OK)
    return codes


@pytest.mark.parametrize("client_auth", [CLIENT_AUTH_CERT, CLIENT_AUTH_NONE])
def test_only_the_admin_changes_members_and_takes_backups(
    tmp_path: Path, client_auth: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tls_dir = tmp_path / "tls"
    with in_process_cluster(tmp_path, 3, tls_dir=tls_dir, client_auth=client_auth) as cluster:
        leader = wait_until(cluster.leader, "a leader over TLS")
        address = next(m.address for m in cluster.members if m.name == leader)
        denied = [grpc.StatusCode.PERMISSION_DENIED] * 2
        assert _raw_admin_calls(address, client_credentials(tls_dir)) == denied
        assert _raw_admin_calls(address, KeyPair.load(tls_dir, "s1").channel_credentials()) == denied
        ca_only = grpc.ssl_channel_credentials((tls_dir / CA_CERT_FILE).read_bytes())
        # Under cert the handshake itself refuses a caller without a certificate.
        no_certificate = denied if client_auth == CLIENT_AUTH_NONE else [grpc.StatusCode.UNAVAILABLE] * 2
        assert _raw_admin_calls(address, ca_only) == no_certificate
        admin = KeyPair.load(tls_dir, "admin").channel_credentials()
        assert _raw_get(cluster, admin) == grpc.StatusCode.OK, "the admin may do what a client may"
        refused = sum(
            n for s in cluster.servers.values() for (_, why), n in s.client_refusals.counts.items() if "admin" in why
        )
        assert refused == (6 if client_auth == CLIENT_AUTH_NONE else 4)
        # A client whose TLS directory holds client.pem but no admin.pem: keys, members, status; no more.
        client_only = tmp_path / "client-only"
        client_only.mkdir()
        for name in (CA_CERT_FILE, "client.pem", "client-key.pem"):
            (client_only / name).write_bytes((tls_dir / name).read_bytes())
        with KVClient(cluster.members, timeout=10, tls_dir=client_only) as kv:
            kv.set("k", "v")
            assert kv.get("k") == "v"
            assert len(kv.members()) == 3
            assert sum(1 for n in kv.status() if n["role"] == "leader") == 1
            with pytest.raises(InvalidRequest, match=r"admin\.pem"):
                kv.remove_member("s2")
            with pytest.raises(InvalidRequest, match=r"admin\.pem"):
                kv.backup(tmp_path / "refused.backup")
            assert len(kv.members()) == 3 and not (tmp_path / "refused.backup").exists()
        hostfile = tmp_path / "elsewhere" / "hostfile.txt"
        hostfile.parent.mkdir()
        hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in cluster.members))
        refused = cli.main(["-h", str(hostfile), "--tls-dir", str(client_only), "members", "remove", "s2"])
        err = capsys.readouterr().err
        assert refused == cli.EXIT_USAGE and err.count("\n") == 1 and "admin.pem" in err, err
        # The library presents admin.pem, found in the same directory, for those calls.
        with KVClient(cluster.members, timeout=20, tls_dir=tls_dir) as kv:
            assert kv.backup(tmp_path / "taken.backup") >= 1
            follower = next(m.name for m in cluster.members if m.name != leader)
            assert follower not in {m.name for m in kv.remove_member(follower)}
            kv.set("after", "removal")
            assert kv.get("after") == "removal"


# -------------------------------------------------------------- rotation


def _presented_certificate(address: str, tls_dir: Path) -> bytes:
    """The certificate a server shows a new connection, in DER."""
    context = ssl.create_default_context(cafile=str(tls_dir / CA_CERT_FILE))
    context.load_cert_chain(tls_dir / cert_file("client"), tls_dir / key_file("client"))
    context.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_a_rotated_certificate_is_used_by_new_connections(
    cluster: InProcessCluster, caplog: pytest.LogCaptureFixture
) -> None:
    tls_dir = cluster.tls_dir
    assert tls_dir is not None
    address = cluster.members[0].address
    old = _der(tls_dir / "s0.pem")
    assert _presented_certificate(address, tls_dir) == old
    with KVClient(cluster.members, timeout=10, tls_dir=tls_dir) as kv:
        kv.set("before", "rotation")
        caplog.set_level(logging.INFO, logger="paxos.tls")
        os.remove(tls_dir / "s0.pem")
        os.remove(tls_dir / "s0-key.pem")
        assert certs.ensure_certificates(tls_dir.parent / "hostfile.txt", tls_dir) == ["s0.pem", "s0-key.pem"]
        new = _der(tls_dir / "s0.pem")
        assert new != old
        wait_until(lambda: _presented_certificate(address, tls_dir) == new, "s0 to present its new certificate")
        assert "reloaded the TLS certificate" in caplog.text
        kv.set("after", "rotation")  # the cluster kept serving, old connections included
        assert kv.get("before") == "rotation" and kv.get("after") == "rotation"
    with KVClient(cluster.members[:1], timeout=10, tls_dir=tls_dir) as fresh:  # a new connection to s0
        wait_until(lambda: fresh.get("after", consistency="local") == "rotation", "s0 to answer with the write")


# ---------------------------------------------- health check, command line


def test_health_check_with_tls(shared_cluster: InProcessCluster, capsys: pytest.CaptureFixture[str]) -> None:
    address, tls_dir = shared_cluster.members[0].address, str(shared_cluster.tls_dir)
    assert healthcheck.main(["--address", address, "--tls-dir", tls_dir]) == 0
    assert healthcheck.main(["--address", address, "--timeout", "0.5"]) == 1
    assert "requires TLS" in capsys.readouterr().err
    assert healthcheck.main(["--address", address, "--tls-dir", tls_dir + "/missing"]) == healthcheck.EXIT_USAGE


def test_command_line_over_tls(shared_cluster: InProcessCluster, capsys: pytest.CaptureFixture[str]) -> None:
    hostfile = shared_cluster.tls_dir.parent / "elsewhere" / "hostfile.txt"  # type: ignore[union-attr]
    hostfile.parent.mkdir()
    hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in shared_cluster.members))
    tls = ["--tls-dir", str(shared_cluster.tls_dir)]
    assert cli.main(["-h", str(hostfile), *tls, "set", "greeting", "hello"]) == cli.EXIT_OK
    assert cli.main(["-h", str(hostfile), *tls, "get", "greeting"]) == cli.EXIT_OK
    assert capsys.readouterr().out == "hello\n"
    assert cli.main(["-h", str(hostfile), *tls, "status"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["-h", str(hostfile), "--tls-dir", "/no/such/dir", "get", "greeting"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.count("\n") == 1
    # Long enough for a refused handshake to be the last error even on a loaded machine.
    assert cli.main(["-h", str(hostfile), "--timeout", "3", "get", "greeting"]) == cli.EXIT_CLUSTER
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "requires TLS" in err
    assert cli.main(["-h", str(hostfile), "status"]) == cli.EXIT_CLUSTER
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no server answers" in err and "requires TLS" in err


def test_a_plaintext_server_warns_once_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="paxos.server")
    with in_process_cluster(tmp_path, 1):
        pass
    warnings = [r for r in caplog.records if "without TLS" in r.getMessage()]
    assert len(warnings) == 1
    assert "is an admin (may change the members, take a backup" in warnings[0].getMessage()


def _client_refused(cluster: InProcessCluster, tls_dir: Path) -> bool:
    return _raw_get(cluster, client_credentials(tls_dir)) != grpc.StatusCode.OK


def test_a_ca_is_replaced_without_a_restart_and_the_old_one_is_revoked(
    cluster: InProcessCluster, tmp_path: Path
) -> None:
    """The README's procedure: trust both CAs, move every pair to the new one, drop the old CA."""
    tls_dir = cluster.tls_dir
    assert tls_dir is not None
    old = tmp_path / "old"
    old.mkdir()
    for path in tls_dir.iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    new = tmp_path / "new"
    certs.ensure_certificates(tls_dir.parent / "hostfile.txt", new)
    both = (new / CA_CERT_FILE).read_bytes() + (old / CA_CERT_FILE).read_bytes()
    (tls_dir / CA_CERT_FILE).write_bytes(both)
    (old / CA_CERT_FILE).write_bytes(both)  # a client not yet moved trusts both CAs as well
    for name in ("s0", "s1", "s2", "client"):
        for file in (key_file(name), cert_file(name)):
            (tls_dir / file).write_bytes((new / file).read_bytes())
    for member in cluster.members:
        wanted = _der(new / cert_file(member.name))
        wait_until(lambda a=member.address, w=wanted: _presented_certificate(a, tls_dir) == w, f"{member.name} moved")
    assert not _client_refused(cluster, old), "while both CAs are trusted, old clients still get in"
    (tls_dir / CA_CERT_FILE).write_bytes((new / CA_CERT_FILE).read_bytes())
    wait_until(lambda: _client_refused(cluster, old), "the old CA's client certificate to be refused")
    with KVClient(cluster.members, timeout=10, tls_dir=tls_dir) as kv:
        kv.set("after", "the new CA")
        assert kv.get("after") == "the new CA"
