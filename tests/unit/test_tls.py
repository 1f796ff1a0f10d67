"""TLS with plain calls: the certificates paxos.certs makes, the proofs, mismatch hints, reloading a pair.

No server runs; servers serving TLS are tests/inprocess/test_tls.py.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from paxos import certs
from paxos.common.hostfile import HostfileError
from paxos.common.proofs import admin_proof, check_admin_proof, check_member_proof, member_proof
from paxos.common.tlsfiles import (
    ADMIN_URI,
    CA_CERT_FILE,
    CLIENT_URI,
    KeyPair,
    TlsError,
    client_credentials,
    find_tls_dir,
    key_file,
    member_uri,
    mismatch_hint,
)
from paxos.server.tlsserver import ServerTls


def _hostfile(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name} 127.0.0.1:{5000 + i}\n" for i, name in enumerate(names)))
    return path


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


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
