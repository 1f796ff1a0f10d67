"""TLS: certificates from paxos.certs, servers that serve only TLS, clients, rotation, the health check.

The servers run in this process (tests/inprocess.py) and are reached over
loopback with ordinary clients; tests/test_hostile_peers_tls.py attacks real
processes.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from client import InvalidRequest, KVClient, Unavailable, cli
from paxos import certs
from paxos.common.hostfile import HostfileError
from paxos.common.proofs import admin_proof, check_admin_proof, check_member_proof, member_proof
from paxos.common.tlsfiles import (
    ADMIN_URI,
    CA_CERT_FILE,
    CLIENT_URI,
    KeyPair,
    TlsError,
    cert_file,
    client_credentials,
    find_tls_dir,
    key_file,
    member_uri,
    mismatch_hint,
)
from paxos.server import healthcheck
from paxos.server.tlsaccess import CLIENT_AUTH_CERT, CLIENT_AUTH_NONE
from paxos.server.tlsserver import ServerTls
from protos import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc
from tests.inprocess import InProcessCluster, in_process_cluster
from tests.polling import wait_until


def _hostfile(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name} 127.0.0.1:{5000 + i}\n" for i, name in enumerate(names)))
    return path


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# ----------------------------------------------------------- paxos.certs


def test_certs_are_made_once_and_missing_ones_added(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    hostfile = _hostfile(tmp_path / "hosts.txt", ["a", "b"])
    assert certs.main(["-h", str(hostfile), "--out", str(out)]) == 0
    expected = {"ca.pem", "ca-key.pem", "a.pem", "a-key.pem", "b.pem", "b-key.pem", "client.pem", "client-key.pem"}
    expected |= {"admin.pem", "admin-key.pem"}
    assert {p.name for p in out.iterdir()} == expected
    for name in ("ca", "a", "b", "client", "admin"):
        assert stat.S_IMODE((out / key_file(name)).stat().st_mode) == 0o600, "keys are for their owner only"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _hostfile(hostfile, ["a", "b", "c"])
    assert certs.main(["-h", str(hostfile), "--out", str(out), "--days", "30"]) == 0
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == expected | {"c.pem", "c-key.pem"}
    assert all(after[name] == data for name, data in before.items()), "the CA and existing pairs are kept"
    new = _load(out / "c.pem")
    new.verify_directly_issued_by(_load(out / CA_CERT_FILE))
    lifetime = new.not_valid_after_utc - new.not_valid_before_utc
    assert datetime.timedelta(days=30) <= lifetime < datetime.timedelta(days=31)
    hostfile.write_text("a 127.0.0.1:5000\nb b.example.net:5001\nc 127.0.0.1:5002\n")  # b moved
    assert certs.ensure_certificates(hostfile, out) == ["b.pem", "b-key.pem"]
    names = _load(out / "b.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "b.example.net" in names.get_values_for_type(x509.DNSName)
    # A directory made before there was an admin pair gets one, and nothing else changes.
    os.remove(out / "admin.pem")
    os.remove(out / "admin-key.pem")
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    assert certs.ensure_certificates(hostfile, out) == ["admin.pem", "admin-key.pem"]
    assert all((out / name).read_bytes() == data for name, data in kept.items())
    hostfile.write_text("admin 127.0.0.1:5000\n")
    with pytest.raises(HostfileError, match="may not be named 'admin'"):
        certs.ensure_certificates(hostfile, out)


def test_certs_command_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert certs.main(["-h", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == certs.EXIT_USAGE
    hostfile = _hostfile(tmp_path / "hosts.txt", ["a"])
    assert certs.main(["-h", str(hostfile), "--out", str(tmp_path / "o"), "--days", "0"]) == certs.EXIT_USAGE
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CA_CERT_FILE).write_text("not a certificate")
    assert certs.main(["-h", str(hostfile), "--out", str(broken)]) == certs.EXIT_FAILED
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)


def test_member_and_client_certificates_say_what_they_grant(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("db1 db1.example.net:50051\nip 10.0.0.7:50051\n")
    certs.ensure_certificates(hostfile, tmp_path / "tls")
    member = _load(tmp_path / "tls" / "db1.pem")
    names = member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["db1.example.net", "localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [member_uri("db1")]
    usages = member.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    by_ip = _load(tmp_path / "tls" / "ip.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "10.0.0.7" in [str(a) for a in by_ip.value.get_values_for_type(x509.IPAddress)]
    client = _load(tmp_path / "tls" / "client.pem")
    client_names = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert client_names.get_values_for_type(x509.UniformResourceIdentifier) == [CLIENT_URI]
    assert client_names.get_values_for_type(x509.DNSName) == [], "a client certificate cannot serve"
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    admin = _load(tmp_path / "tls" / "admin.pem")
    admin_names = admin.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert admin_names.get_values_for_type(x509.UniformResourceIdentifier) == [ADMIN_URI]
    assert admin_names.get_values_for_type(x509.DNSName) == [], "an admin certificate cannot serve"
    assert list(admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]


def test_tls_directory_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="not found"):
        client_credentials(tmp_path / "nowhere")
    (tmp_path / "d").mkdir()
    with pytest.raises(TlsError, match=r"ca\.pem not found"):
        client_credentials(tmp_path / "d")
    (tmp_path / "d" / CA_CERT_FILE).write_bytes(b"\0" * 100)
    with pytest.raises(TlsError, match="not a PEM"):
        client_credentials(tmp_path / "d")


def test_a_client_finds_the_tls_directory_beside_its_hostfile(tmp_path: Path) -> None:
    hostfile = _hostfile(tmp_path / "hostfile.txt", ["a"])
    assert find_tls_dir(hostfile, environ={}) is None
    certs.ensure_certificates(hostfile, tmp_path / "tls")
    assert find_tls_dir(hostfile, environ={}) == tmp_path / "tls"
    assert find_tls_dir(hostfile, environ={"PAXOSKV_TLS_DIR": "/elsewhere"}) == Path("/elsewhere")
    assert find_tls_dir(hostfile, "given", environ={"PAXOSKV_TLS_DIR": "/elsewhere"}) == Path("given")


def test_a_member_proof_holds_only_for_its_receiver_time_and_ca(tmp_path: Path) -> None:
    hostfile = _hostfile(tmp_path / "hosts.txt", ["a", "b"])
    certs.ensure_certificates(hostfile, tmp_path / "tls")
    certs.ensure_certificates(hostfile, tmp_path / "other")
    pair = KeyPair.load(tmp_path / "tls", "a")
    now = 1_800_000_000.0
    proof = tuple(member_proof(pair, "b", now))
    assert check_member_proof(proof, pair.ca, "b", now + 10) == "a"
    with pytest.raises(TlsError, match="does not verify"):
        check_member_proof(proof, pair.ca, "c", now)  # replayed to another server
    with pytest.raises(TlsError, match="too old"):
        check_member_proof(proof, pair.ca, "b", now + 3600)
    with pytest.raises(TlsError, match="does not verify"):
        check_member_proof(proof, KeyPair.load(tmp_path / "other", "a").ca, "b", now)
    client = KeyPair.load(tmp_path / "tls", "client")
    with pytest.raises(TlsError, match="names no member"):
        check_member_proof(tuple(member_proof(client, "b", now)), pair.ca, "b", now)
    with pytest.raises(TlsError, match="no member certificate"):
        check_member_proof((), pair.ca, "b", now)


def test_an_admin_proof_holds_only_for_the_admin_its_receiver_and_time(tmp_path: Path) -> None:
    hostfile = _hostfile(tmp_path / "hosts.txt", ["a", "b"])
    certs.ensure_certificates(hostfile, tmp_path / "tls")
    admin = KeyPair.load(tmp_path / "tls", "admin")
    now = 1_800_000_000.0
    check_admin_proof(tuple(admin_proof(admin, "b", now)), admin.ca, "b", now + 10)
    with pytest.raises(TlsError, match="does not verify"):
        check_admin_proof(tuple(admin_proof(admin, "b", now)), admin.ca, "a", now)  # replayed to another server
    with pytest.raises(TlsError, match="too old"):
        check_admin_proof(tuple(admin_proof(admin, "b", now)), admin.ca, "b", now + 3600)
    for other in ("client", "a"):
        with pytest.raises(TlsError, match="not the admin's"):
            check_admin_proof(tuple(admin_proof(KeyPair.load(tmp_path / "tls", other), "b", now)), admin.ca, "b", now)
    with pytest.raises(TlsError, match="no admin certificate"):  # a member's proof is no admin's
        check_admin_proof(tuple(member_proof(KeyPair.load(tmp_path / "tls", "a"), "b", now)), admin.ca, "b", now)


def test_mismatch_hints_name_the_setting_to_fix() -> None:
    assert "requires TLS" in str(mismatch_hint("UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed", using_tls=False))
    assert "not from this TLS directory" in str(mismatch_hint("Tls handshake failed CERTIFICATE_VERIFY_FAILED", True))
    assert "does not speak TLS" in str(mismatch_hint("SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER", True))
    assert mismatch_hint("failed to connect: connection refused", True) is None


# ------------------------------------------------------ servers with TLS


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[InProcessCluster]:
    with in_process_cluster(tmp_path, 3, tls_dir=tmp_path / "tls") as cluster:
        wait_until(cluster.leader, "a leader over TLS")
        yield cluster


def _raw_get(cluster: InProcessCluster, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(cluster.members[0].address, credentials) as channel:
        try:
            kv_pb2_grpc.KVStub(channel).Get(kv_pb2.GetRequest(key="k", consistency=kv_pb2.LOCAL), timeout=5)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_clients_with_the_client_certificate_are_served(tls_cluster: InProcessCluster) -> None:
    assert tls_cluster.tls_dir is not None
    with KVClient(tls_cluster.members, timeout=10, tls_dir=tls_cluster.tls_dir) as kv:
        kv.set("k", "v")
        assert kv.get("k") == "v"
        assert kv.delete("k") is True
        assert sum(1 for n in kv.status() if n["role"] == "leader") == 1
    with pytest.raises(Unavailable) as caught, KVClient(tls_cluster.members, timeout=0.5) as plain:
        plain.get("k")
    assert "requires TLS" in str(mismatch_hint(str(caught.value), using_tls=False))


def test_a_member_certificate_does_not_open_the_client_api(tls_cluster: InProcessCluster) -> None:
    assert tls_cluster.tls_dir is not None
    member = KeyPair.load(tls_cluster.tls_dir, "s1").channel_credentials()
    assert _raw_get(tls_cluster, member) == grpc.StatusCode.PERMISSION_DENIED
    assert _raw_get(tls_cluster, client_credentials(tls_cluster.tls_dir)) == grpc.StatusCode.OK
    refusals = tls_cluster.servers["s0"].client_refusals.counts
    assert sum(n for (_, reason), n in refusals.items() if reason == "no client certificate") == 1


def test_a_client_certificate_does_not_open_a_peer_stream(tls_cluster: InProcessCluster) -> None:
    assert tls_cluster.tls_dir is not None
    server = tls_cluster.servers["s0"]
    with grpc.secure_channel(tls_cluster.members[0].address, client_credentials(tls_cluster.tls_dir)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            peer_pb2_grpc.PeerStub(channel).Stream(iter([peer_pb2.PeerMessage(sender=1)]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    reasons = {reason for _, reason in server.refusals.counts}
    assert "peer stream without a member certificate" in reasons


def test_the_incarnation_question_needs_a_member_certificate(tls_cluster: InProcessCluster) -> None:
    assert tls_cluster.tls_dir is not None
    # The leader hears from every follower (followers do not talk to each other).
    leader = wait_until(tls_cluster.leader, "a leader")
    follower = next(m.name for m in tls_cluster.members if m.name != leader)
    server, asker = tls_cluster.servers[leader], tls_cluster.servers[follower]
    wait_until(lambda: server.replica.incarnations.recorded_for([asker.node_id]), f"{leader} to hear from {follower}")
    question = peer_pb2.IncarnationRequest(name=follower, member_id=asker.node_id)
    address = next(m.address for m in tls_cluster.members if m.name == leader)
    with grpc.secure_channel(address, client_credentials(tls_cluster.tls_dir)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            peer_pb2_grpc.PeerStub(channel).Incarnation(question, timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    member = KeyPair.load(tls_cluster.tls_dir, follower).channel_credentials()
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
    tls_cluster: InProcessCluster, caplog: pytest.LogCaptureFixture
) -> None:
    tls_dir = tls_cluster.tls_dir
    assert tls_dir is not None
    address = tls_cluster.members[0].address
    old = _der(tls_dir / "s0.pem")
    assert _presented_certificate(address, tls_dir) == old
    with KVClient(tls_cluster.members, timeout=10, tls_dir=tls_dir) as kv:
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
    with KVClient(tls_cluster.members[:1], timeout=10, tls_dir=tls_dir) as fresh:  # a new connection to s0
        wait_until(lambda: fresh.get("after", consistency="local") == "rotation", "s0 to answer with the write")


def test_a_half_rotated_pair_is_not_loaded(tmp_path: Path) -> None:
    hostfile = _hostfile(tmp_path / "hosts.txt", ["a", "b"])
    tls_dir = tmp_path / "tls"
    certs.ensure_certificates(hostfile, tls_dir)
    tls = ServerTls(tls_dir, "a")
    serving = tls.pair
    (tls_dir / "a-key.pem").write_bytes((tls_dir / "b-key.pem").read_bytes())  # a new key, its cert not yet there
    assert tls.reload_if_changed(force=True) is False
    assert tls.pair == serving and tls.reloads == 0
    (tls_dir / "a.pem").write_bytes((tls_dir / "b.pem").read_bytes())
    assert tls.reload_if_changed(force=True) is True
    assert tls.pair.cert == (tls_dir / "b.pem").read_bytes() and tls.reloads == 1
    # Loaded on the way out (a peer connection), it still reaches gRPC's server side once.
    assert tls._fetch() is not None
    assert tls._fetch() is None


# ---------------------------------------------- health check, command line


def test_health_check_with_tls(tls_cluster: InProcessCluster, capsys: pytest.CaptureFixture[str]) -> None:
    address, tls_dir = tls_cluster.members[0].address, str(tls_cluster.tls_dir)
    assert healthcheck.main(["--address", address, "--tls-dir", tls_dir]) == 0
    assert healthcheck.main(["--address", address, "--timeout", "0.5"]) == 1
    assert "requires TLS" in capsys.readouterr().err
    assert healthcheck.main(["--address", address, "--tls-dir", tls_dir + "/missing"]) == healthcheck.EXIT_USAGE


def test_command_line_over_tls(tls_cluster: InProcessCluster, capsys: pytest.CaptureFixture[str]) -> None:
    hostfile = tls_cluster.tls_dir.parent / "elsewhere" / "hostfile.txt"  # type: ignore[union-attr]
    hostfile.parent.mkdir()
    hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in tls_cluster.members))
    tls = ["--tls-dir", str(tls_cluster.tls_dir)]
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
    tls_cluster: InProcessCluster, tmp_path: Path
) -> None:
    """The README's procedure: trust both CAs, move every pair to the new one, drop the old CA."""
    tls_dir = tls_cluster.tls_dir
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
    for member in tls_cluster.members:
        wanted = _der(new / cert_file(member.name))
        wait_until(lambda a=member.address, w=wanted: _presented_certificate(a, tls_dir) == w, f"{member.name} moved")
    assert not _client_refused(tls_cluster, old), "while both CAs are trusted, old clients still get in"
    (tls_dir / CA_CERT_FILE).write_bytes((new / CA_CERT_FILE).read_bytes())
    wait_until(lambda: _client_refused(tls_cluster, old), "the old CA's client certificate to be refused")
    with KVClient(tls_cluster.members, timeout=10, tls_dir=tls_dir) as kv:
        kv.set("after", "the new CA")
        assert kv.get("after") == "the new CA"


def test_server_command_line_tls_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from paxos import __main__ as server_main

    hostfile = _hostfile(tmp_path / "hosts.txt", ["a"])
    base = ["-h", str(hostfile), "-n", "a", "--data-dir", str(tmp_path / "data")]
    assert server_main.main([*base, "--client-auth", "none"]) == server_main.EXIT_USAGE
    assert server_main.main([*base, "--tls-dir", str(tmp_path / "missing")]) == server_main.EXIT_USAGE
    certs.ensure_certificates(hostfile, tmp_path / "tls")
    (tmp_path / "tls" / "a-key.pem").write_bytes((tmp_path / "tls" / "client-key.pem").read_bytes())
    assert server_main.main([*base, "--tls-dir", str(tmp_path / "tls")]) == server_main.EXIT_USAGE
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "does not belong to the certificate" in errors[2]


def test_a_plaintext_server_starts_without_loading_cryptography() -> None:
    import subprocess
    import sys

    probe = "import sys, paxos.__main__, client.cli; print('cryptography' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
