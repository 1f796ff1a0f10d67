"""``python -m paxos.certs -h HOSTFILE --out DIR [--days N]``: the certificates of a cluster.

Creates, in DIR, a certificate authority (``ca.pem``, ``ca-key.pem``), one
certificate per server of the hostfile (``NAME.pem``, ``NAME-key.pem``) and
one for clients (``client.pem``, ``client-key.pem``) and one for the
cluster's administrators (``admin.pem``, ``admin-key.pem``).  Running it
again keeps the CA and every pair already there, and adds what is missing: a
server new in the hostfile, one whose host changed, the admin pair of a
directory made before there was one, or a pair deleted to have it issued
afresh (rotation).

A server's certificate names the server's host from the hostfile,
``localhost`` and ``127.0.0.1`` (so clients can check they reached the
right address), and the URI ``paxoskv://member/NAME`` that grants the peer
stream; the client certificate holds ``paxoskv://client`` instead, and the
admin certificate ``paxoskv://admin`` (see paxos/common/tlsfiles.py for
the rule).  Keys are ECDSA P-256, written readable by their owner only.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from paxos.common.hostfile import HostfileError, Member, parse_hostfile
from paxos.common.limits import DEFAULT_CERT_DAYS
from paxos.common.tlsfiles import (
    ADMIN_NAME,
    ADMIN_URI,
    CA_CERT_FILE,
    CA_KEY_FILE,
    CLIENT_NAME,
    CLIENT_URI,
    TlsError,
    cert_file,
    key_file,
    member_uri,
    read_pem,
)

EXIT_USAGE = 2
EXIT_FAILED = 1
ORGANIZATION = "paxoskv"
# Certificates are valid from a little before they are made, so that a
# machine whose clock is a few minutes behind the issuer's accepts them.
BACKDATE = datetime.timedelta(minutes=5)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

PrivateKey = ec.EllipticCurvePrivateKey


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)
    return x509.Name([organization, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(authority: bool) -> x509.KeyUsage:
    """A CA signs certificates; an ECDSA leaf signs handshakes and agrees keys."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not authority,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class Authority:
    """The cluster's CA: its certificate and key, and the certificates it issues."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, days: int, now: datetime.datetime) -> Authority:
        key = _new_key()
        name = _name("paxoskv cluster CA")
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(authority=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        cert_pem, key_pem = read_pem(directory / CA_CERT_FILE), read_pem(directory / CA_KEY_FILE)
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as exc:
            raise TlsError(f"the CA in {directory} cannot be read ({exc})") from None
        if not isinstance(key, PrivateKey) or key.public_key() != cert.public_key():
            raise TlsError(f"{directory / CA_KEY_FILE} is not the key of {directory / CA_CERT_FILE}")
        return cls(cert, key)

    def issue(
        self, common_name: str, names: Sequence[x509.GeneralName], server: bool, days: int, now: datetime.datetime
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A certificate for ``common_name`` with these alternative names; ``server`` adds TLS server use."""
        key = _new_key()
        usages = (
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            if server
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        not_after = min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(authority=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def member_names(member: Member) -> list[x509.GeneralName]:
    """A server certificate's alternative names: its host, loopback, and its member URI."""
    hosts = list(dict.fromkeys([member.host, *LOOPBACK_NAMES]))
    return [*(_host_name(h) for h in hosts), x509.UniformResourceIdentifier(member_uri(member.name))]


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write ``path`` whole or not at all: a server reloading it never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _save_pair(directory: Path, name: str, cert: x509.Certificate, key: PrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key first: a reloading server waits for a certificate that matches it.
    _write(directory / key_file(name), key_pem, private=True)
    _write(directory / cert_file(name), cert.public_bytes(serialization.Encoding.PEM), private=False)


def _still_fits(directory: Path, name: str, names: Sequence[x509.GeneralName], authority: Authority) -> bool:
    """True when ``name``'s pair is there, issued by this CA, and names everything it should.

    A server whose host changed in the hostfile gets a new certificate; so
    does a pair left by another CA or half deleted.
    """
    cert_path, key_path = directory / cert_file(name), directory / key_file(name)
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(read_pem(cert_path))
        cert.verify_directly_issued_by(authority.cert)
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (TlsError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return all(n in present for n in names)


def ensure_certificates(
    hostfile: str | Path, out: str | Path, days: int = DEFAULT_CERT_DAYS, now: datetime.datetime | None = None
) -> list[str]:
    """Create what ``out`` lacks for the servers of ``hostfile``; the files written, by name."""
    if days < 1:
        raise ValueError("--days must be at least 1")
    members = parse_hostfile(hostfile)
    for member in members:
        if member.name in ("ca", CLIENT_NAME, ADMIN_NAME):
            raise HostfileError(f"{hostfile}: a server may not be named {member.name!r}: that certificate is taken")
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    now = now or datetime.datetime.now(datetime.UTC)
    created: list[str] = []
    if (directory / CA_CERT_FILE).exists() or (directory / CA_KEY_FILE).exists():
        authority = Authority.load(directory)
    else:
        authority = Authority.create(days, now)
        _save_pair(directory, "ca", authority.cert, authority.key)
        created += [CA_CERT_FILE, CA_KEY_FILE]
    wanted: list[tuple[str, list[x509.GeneralName], bool]] = [(m.name, member_names(m), True) for m in members]
    wanted.append((CLIENT_NAME, [x509.UniformResourceIdentifier(CLIENT_URI)], False))
    wanted.append((ADMIN_NAME, [x509.UniformResourceIdentifier(ADMIN_URI)], False))
    for name, names, server in wanted:
        if _still_fits(directory, name, names, authority):
            continue
        cert, key = authority.issue(name, names, server, days, now)
        _save_pair(directory, name, cert, key)
        created += [cert_file(name), key_file(name)]
    return created


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paxos.certs",
        add_help=False,
        description=(
            "Create the TLS certificates of a paxoskv cluster: a CA, one certificate per server of the "
            "hostfile, one for clients (client.pem: keys, photos, the member list, status) and one for "
            "administrators (admin.pem: besides, changing the members and taking backups).  Run again, it keeps "
            "the CA and the certificates already there and adds what is missing: servers new in the hostfile or "
            "whose host changed, the admin pair (delete NAME.pem and NAME-key.pem to have them issued afresh)."
        ),
        epilog="Exit codes: 0 done, 1 the directory's CA is unusable or it cannot be written, 2 bad usage or hostfile.",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", "--hostfile", required=True, metavar="HOSTFILE", help="the cluster's hostfile")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the certificates")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_CERT_DAYS, metavar="N",
        help=f"validity of new certificates in days (default {DEFAULT_CERT_DAYS})",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.days < 1:
        print("error: --days must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        created = ensure_certificates(opts.hostfile, opts.out, opts.days)
    except HostfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TlsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if created:
        print(f"wrote {', '.join(created)} in {opts.out}", file=sys.stderr)
    else:
        print(f"{opts.out} already holds every certificate the hostfile needs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
