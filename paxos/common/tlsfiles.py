"""The files of a TLS directory, and the gRPC credentials made from them.

``python -m paxos.certs`` writes a directory holding a CA (``ca.pem``,
``ca-key.pem``), one certificate per server (``NAME.pem``, ``NAME-key.pem``)
one for clients (``client.pem``, ``client-key.pem``) and one for the
cluster's administrators (``admin.pem``, ``admin-key.pem``).  This module
reads them; it needs nothing but gRPC, so the client library may import it.

Who a certificate speaks for is written in it as a URI subject alternative
name, and gRPC hands the names of a verified certificate to the server:

* ``paxoskv://member/NAME``: the server NAME.  Only such a certificate opens
  a peer stream, and every message on that stream must come from NAME.
  Extended key usage: TLS server and TLS client (servers call each other).
* ``paxoskv://client``: a client.  Only such a certificate (or the admin's)
  may use the client API when servers run with ``--client-auth cert`` (the
  default); it reads and writes keys and photos, lists the members and reads
  the status.  Extended key usage: TLS client only, so it cannot serve either.
* ``paxoskv://admin``: an administrator.  Whatever a client may do, and besides
  ``ChangeMembers`` and ``Backup``, which under TLS need this certificate
  whatever ``--client-auth`` says.  Extended key usage: TLS client only.

A member certificate does not grant the client API, and a client or admin
certificate does not grant the peer stream; all come from the cluster's CA.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from paxos.common.limits import MAX_PEM_BYTES

TLS_DIR_ENV = "PAXOSKV_TLS_DIR"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CLIENT_NAME = "client"
ADMIN_NAME = "admin"
# A client finds a TLS directory of this name beside its hostfile by itself.
BESIDE_HOSTFILE_DIR = "tls"
MEMBER_URI_PREFIX = "paxoskv://member/"
CLIENT_URI = "paxoskv://client"
ADMIN_URI = "paxoskv://admin"
# The key of a verified peer certificate's subject alternative names in a
# gRPC auth context (grpc_auth_context property names).
SAN_PROPERTY = "x509_subject_alternative_name"


class TlsError(ValueError):
    """A TLS directory or one of its files cannot be used; the message says which and why."""


def cert_file(name: str) -> str:
    return f"{name}.pem"


def key_file(name: str) -> str:
    return f"{name}-key.pem"


def member_uri(name: str) -> str:
    return MEMBER_URI_PREFIX + name


def read_pem(path: Path) -> bytes:
    """A PEM file's bytes; TlsError naming the file if it is missing, unreadable or not PEM."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise TlsError(f"{path} not found (python -m paxos.certs creates it)") from None
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"{path} is larger than {MAX_PEM_BYTES} bytes; not a certificate or key")
    if b"-----BEGIN " not in data:
        raise TlsError(f"{path} is not a PEM certificate or key")
    return data


def check_dir(tls_dir: str | Path) -> Path:
    path = Path(tls_dir)
    if not path.is_dir():
        raise TlsError(f"TLS directory {path} not found (python -m paxos.certs -h HOSTFILE --out {path} creates it)")
    return path


@dataclass(frozen=True)
class KeyPair:
    """One party's certificate and private key, with the CA that verifies the other side."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, tls_dir: str | Path, name: str) -> KeyPair:
        path = check_dir(tls_dir)
        return cls(read_pem(path / CA_CERT_FILE), read_pem(path / cert_file(name)), read_pem(path / key_file(name)))

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, private_key=self.key, certificate_chain=self.cert)


def client_credentials(tls_dir: str | Path) -> grpc.ChannelCredentials:
    """What a client presents: the CA to check servers against, and the client certificate."""
    return KeyPair.load(tls_dir, CLIENT_NAME).channel_credentials()


def admin_pair(tls_dir: str | Path) -> KeyPair | None:
    """The admin's pair when ``tls_dir`` holds ``admin.pem`` (TlsError if it cannot be read), else None.

    Commands that change the members or take a backup present it; without it
    they present ``client.pem``, which servers under TLS refuse for them.
    """
    if not (check_dir(tls_dir) / cert_file(ADMIN_NAME)).exists():
        return None
    return KeyPair.load(tls_dir, ADMIN_NAME)


def tls_dir_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    return environ.get(TLS_DIR_ENV) or None


def find_tls_dir(
    hostfile: str | Path, given: str | Path | None = None, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """The TLS directory a client of ``hostfile`` uses: ``given``, else $PAXOSKV_TLS_DIR, else
    ``tls`` beside the hostfile if it holds a CA (as python -m paxos.local writes it), else None (plaintext)."""
    if given is not None:
        return Path(given)
    from_env = tls_dir_from_env(environ)
    if from_env is not None:
        return Path(from_env)
    beside = Path(hostfile).parent / BESIDE_HOSTFILE_DIR
    return beside if (beside / CA_CERT_FILE).is_file() else None


def alternative_names(auth_context: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The subject alternative names of the verified certificate a caller presented (none without TLS)."""
    names = []
    for raw in auth_context.get(SAN_PROPERTY, ()):
        try:
            names.append(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
        except UnicodeDecodeError:
            continue  # the CA never signs such a name; ignore it rather than trust it
    return names


def member_named(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The member a verified certificate speaks for, or None if it names none (or several)."""
    members = {n[len(MEMBER_URI_PREFIX) :] for n in alternative_names(auth_context) if n.startswith(MEMBER_URI_PREFIX)}
    return members.pop() if len(members) == 1 else None


def is_client(auth_context: Mapping[str, Iterable[bytes]]) -> bool:
    """True when the caller presented a verified client certificate, or the admin's (which may do as much)."""
    names = alternative_names(auth_context)
    return (CLIENT_URI in names or ADMIN_URI in names) and not any(n.startswith(MEMBER_URI_PREFIX) for n in names)


def is_admin(auth_context: Mapping[str, Iterable[bytes]]) -> bool:
    """True when the caller presented a verified admin certificate."""
    names = alternative_names(auth_context)
    return ADMIN_URI in names and not any(n.startswith(MEMBER_URI_PREFIX) for n in names)


def mismatch_hint(error: str, using_tls: bool) -> str | None:
    """What a failed connection says about TLS, for a user who must fix a setting; None if nothing."""
    text = error.lower()
    if "wrong_version_number" in text:
        return "the server does not speak TLS (started without --tls-dir?): connect without --tls-dir/$" + TLS_DIR_ENV
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return "the server's certificate is not from this TLS directory's ca.pem (another cluster's CA?) or expired"
    if "handshake" in text and using_tls:
        return "the TLS handshake failed: check that the TLS directory belongs to this cluster"
    if "socket closed" in text or "connection reset" in text:
        if using_tls:
            return "the server refused this client certificate (issued by another CA, or expired)"
        return f"the server closed the connection: it probably requires TLS; give --tls-dir DIR or set {TLS_DIR_ENV}"
    if "admin.pem" in text:
        return "changing the members and taking a backup need the TLS directory's admin.pem (python -m paxos.certs)"
    if "permission_denied" in text and "certificate" in text:
        return "the server wants a client certificate: use the TLS directory's client.pem, not a server's"
    return None
