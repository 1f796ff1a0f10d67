"""A server's side of TLS: its credentials, reloaded when the files change, and who may call what.

``ServerTls`` gives gRPC a certificate fetcher: on each new connection
(checked at most once per ``TLS_RELOAD_CHECK_SECONDS``) it looks at the
server's ``NAME.pem``, ``NAME-key.pem`` and ``ca.pem``, and when any of them
changed it loads them again, so a rotated certificate is used by new
connections without a restart (connections already open keep theirs).  A
half-written or mismatched pair is not loaded: the server keeps the last good
one and logs why, once per change.

Under ``--client-auth none`` gRPC does not ask callers for a certificate at
all (it can only require one or not ask), so a peer opening a stream sends
its certificate and a signature, made with its key, over the receiver's name
and the time (``member_proof``); the receiver checks both against the CA
(``ServerTls.member_from_proof``).  TLS keeps the proof from anyone but the
receiver, and the receiver's name in it keeps the receiver from replaying it
elsewhere.  The admin proves itself on each ``ChangeMembers`` or ``Backup``
call in the same way (``admin_proof``, other words signed), so that under
``none`` too only the holder of ``admin.pem`` changes the members.

The rule for the client API is in paxos/tlsaccess.py, which a plaintext
server can import without loading the cryptography package.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from paxos.limits import MAX_PEM_BYTES, PEER_PROOF_MAX_AGE_SECONDS, TLS_RELOAD_CHECK_SECONDS
from paxos.tlsaccess import CLIENT_AUTH_CERT, CLIENT_AUTH_MODES
from paxos.tlsfiles import (
    ADMIN_URI,
    CA_CERT_FILE,
    MEMBER_URI_PREFIX,
    KeyPair,
    TlsError,
    cert_file,
    check_dir,
    key_file,
    read_pem,
)

log = logging.getLogger("paxos.tls")


_FileStamp = tuple[int, int, int]  # inode, size, mtime in ns


def _stamp(path: Path) -> _FileStamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def issued_by_one_of(cert: x509.Certificate, ca_pem: bytes) -> bool:
    """True when one of the CAs in ``ca_pem`` (one, or several while a CA is replaced) signed ``cert``."""
    for ca in x509.load_pem_x509_certificates(ca_pem):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def check_pair(pair: KeyPair, where: str) -> x509.Certificate:
    """The certificate of ``pair`` once it parses, matches its key and was issued by the CA; else TlsError."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert)
        key = serialization.load_pem_private_key(pair.key, password=None)
        issued = issued_by_one_of(cert, pair.ca)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"{where}: cannot read the certificate, key or CA ({exc})") from None
    if key.public_key() != cert.public_key():
        raise TlsError(f"{where}: the key does not belong to the certificate")
    if not issued:
        raise TlsError(f"{where}: the certificate was not issued by a CA in {CA_CERT_FILE}")
    return cert


@dataclass(frozen=True)
class _Loaded:
    stamps: tuple[_FileStamp | None, ...]
    pair: KeyPair
    serial: int
    not_after: str


class ServerTls:
    """The certificate and key of server ``name`` from ``tls_dir``, reloaded when they change."""

    def __init__(
        self, tls_dir: str | Path, name: str, client_auth: str = CLIENT_AUTH_CERT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if client_auth not in CLIENT_AUTH_MODES:
            raise ValueError(f"client auth must be one of {CLIENT_AUTH_MODES}, not {client_auth!r}")
        self.dir = check_dir(tls_dir)
        self.name = name
        self.client_auth = client_auth
        self._clock = clock
        self._paths = (self.dir / cert_file(name), self.dir / key_file(name), self.dir / CA_CERT_FILE)
        self._lock = threading.Lock()  # gRPC calls the fetcher from its own threads
        self._current = self._load()
        self._served = self._current  # what gRPC's server credentials hold
        self._next_check = clock() + TLS_RELOAD_CHECK_SECONDS
        self._refused_stamps: tuple[_FileStamp | None, ...] | None = None
        self.reloads = 0

    @property
    def pair(self) -> KeyPair:
        return self._current.pair

    def _load(self) -> _Loaded:
        stamps = tuple(_stamp(p) for p in self._paths)
        cert_path, key_path, ca_path = self._paths
        pair = KeyPair(read_pem(ca_path), read_pem(cert_path), read_pem(key_path))
        cert = check_pair(pair, str(cert_path))
        return _Loaded(stamps, pair, cert.serial_number, cert.not_valid_after_utc.isoformat())

    def describe(self) -> str:
        return f"{self._paths[0]} (serial {self._current.serial:x}, valid until {self._current.not_after})"

    def _configuration(self) -> Any:
        pair = self._current.pair
        return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)], root_certificates=pair.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(),
            self._fetch,
            require_client_authentication=self.client_auth == CLIENT_AUTH_CERT,
        )

    def _fetch(self) -> Any:
        """gRPC's certificate fetcher: a new configuration when the pair changed since gRPC last got one."""
        try:
            self.reload_if_changed()
            with self._lock:
                if self._served is self._current:
                    return None
                self._served = self._current
                return self._configuration()
        except Exception:  # an exception here would fail the handshake; keep the last good pair
            log.exception("checking the TLS files failed; keeping the certificate in use")
            return None

    def reload_if_changed(self, force: bool = False) -> bool:
        """Load the files again if they changed (checked at most once per interval); True when loaded."""
        with self._lock:
            now = self._clock()
            if not force and now < self._next_check:
                return False
            self._next_check = now + TLS_RELOAD_CHECK_SECONDS
            stamps = tuple(_stamp(p) for p in self._paths)
            if stamps == self._current.stamps or stamps == self._refused_stamps:
                return False
            try:
                loaded = self._load()
            except TlsError as exc:
                self._refused_stamps = stamps
                log.warning("TLS files changed but cannot be used yet, keeping the certificate in use: %s", exc)
                return False
            self._current, self._refused_stamps = loaded, None
            self.reloads += 1
            log.info("reloaded the TLS certificate: new connections use %s", self.describe())
            return True

    def member_from_proof(self, metadata: tuple[tuple[str, str | bytes], ...] | None, now: float) -> str:
        """The member proven by a peer stream's metadata (``--client-auth none``); TlsError if none."""
        return check_member_proof(metadata, self.pair.ca, self.name, now)

    def admin_from_proof(self, metadata: tuple[tuple[str, str | bytes], ...] | None, now: float) -> None:
        """Return when the call's metadata proves the admin (``--client-auth none``); TlsError if not."""
        check_admin_proof(metadata, self.pair.ca, self.name, now)

    def peer_metadata(self, receiver: str, now: float) -> list[tuple[str, str | bytes]]:
        with self._lock:
            pair = self._current.pair
        return member_proof(pair, receiver, now)

    def peer_credentials(self) -> grpc.ChannelCredentials:
        """What this server presents when it calls a peer: its own (current) certificate."""
        self.reload_if_changed()
        with self._lock:
            return self._current.pair.channel_credentials()


@dataclass(frozen=True)
class _ProofKind:
    """What a signed proof speaks for: the metadata keys it travels in and the words it signs."""

    who: str  # "member" or "admin", in error messages
    cert_key: str
    signature_key: str
    time_key: str
    purpose: str


_MEMBER_PROOF = _ProofKind(
    "member", "paxoskv-member-cert-bin", "paxoskv-member-proof-bin", "paxoskv-member-time", "paxoskv peer stream"
)
# An admin under --client-auth none proves itself on each ChangeMembers or
# Backup call the same way; other words, so that neither proof passes for the other.
_ADMIN_PROOF = _ProofKind(
    "admin", "paxoskv-admin-cert-bin", "paxoskv-admin-proof-bin", "paxoskv-admin-time", "paxoskv admin call"
)
MAX_SIGNATURE_BYTES = 256


def _proof_text(kind: _ProofKind, receiver: str, unix_seconds: int) -> bytes:
    return f"{kind.purpose}\0{receiver}\0{unix_seconds}".encode()


def _signed_proof(kind: _ProofKind, pair: KeyPair, receiver: str, now: float) -> list[tuple[str, str | bytes]]:
    key = serialization.load_pem_private_key(pair.key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "python -m paxos.certs makes ECDSA keys"
    unix_seconds = int(now)
    signature = key.sign(_proof_text(kind, receiver, unix_seconds), ec.ECDSA(hashes.SHA256()))
    return [(kind.cert_key, pair.cert), (kind.signature_key, signature), (kind.time_key, str(unix_seconds))]


def member_proof(pair: KeyPair, receiver: str, now: float) -> list[tuple[str, str | bytes]]:
    """The metadata with which a member opens a peer stream to ``receiver``."""
    return _signed_proof(_MEMBER_PROOF, pair, receiver, now)


def admin_proof(pair: KeyPair, receiver: str, now: float) -> list[tuple[str, str | bytes]]:
    """The metadata with which the admin's ChangeMembers or Backup call to server ``receiver`` proves itself."""
    return _signed_proof(_ADMIN_PROOF, pair, receiver, now)


def _client_auth_names(cert: x509.Certificate) -> list[str] | None:
    """The URIs of a certificate made for TLS clients; None if it is not one."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return None
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def _certified_member(cert: x509.Certificate) -> str | None:
    uris = [u for u in _client_auth_names(cert) or [] if u.startswith(MEMBER_URI_PREFIX)]
    return uris[0][len(MEMBER_URI_PREFIX) :] if len(uris) == 1 else None


def _proven_certificate(
    kind: _ProofKind, metadata: tuple[tuple[str, str | bytes], ...] | None, ca_pem: bytes, receiver: str, now: float
) -> x509.Certificate:
    """The certificate whose key signed this call's proof for ``receiver``, recently; TlsError saying why not."""
    fields = {key: value for key, value in metadata or ()}
    cert_pem, signature, stamp = (fields.get(k) for k in (kind.cert_key, kind.signature_key, kind.time_key))
    if not isinstance(cert_pem, bytes) or not isinstance(signature, bytes) or not isinstance(stamp, str):
        raise TlsError(f"no {kind.who} certificate and proof")
    if len(cert_pem) > MAX_PEM_BYTES or len(signature) > MAX_SIGNATURE_BYTES or not stamp.isdigit() or len(stamp) > 20:
        raise TlsError(f"malformed {kind.who} proof")
    if abs(now - int(stamp)) > PEER_PROOF_MAX_AGE_SECONDS:
        raise TlsError(f"{kind.who} proof too old or from the future (clocks apart?)")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        if not issued_by_one_of(cert, ca_pem):
            raise TlsError(f"{kind.who} proof does not verify (certificate from another CA)")
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise TlsError(f"{kind.who} certificate without an ECDSA key")
        public.verify(signature, _proof_text(kind, receiver, int(stamp)), ec.ECDSA(hashes.SHA256()))
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise TlsError(f"{kind.who} proof does not verify ({type(exc).__name__})") from None
    if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
        raise TlsError(f"{kind.who} certificate expired or not yet valid")
    return cert


def check_member_proof(
    metadata: tuple[tuple[str, str | bytes], ...] | None, ca_pem: bytes, receiver: str, now: float
) -> str:
    """The member that signed this stream's opening; TlsError saying why not."""
    member = _certified_member(_proven_certificate(_MEMBER_PROOF, metadata, ca_pem, receiver, now))
    if member is None:
        raise TlsError("certificate names no member")
    return member


def check_admin_proof(
    metadata: tuple[tuple[str, str | bytes], ...] | None, ca_pem: bytes, receiver: str, now: float
) -> None:
    """Return when the admin's certificate signed this call for ``receiver``; TlsError saying why not."""
    names = _client_auth_names(_proven_certificate(_ADMIN_PROOF, metadata, ca_pem, receiver, now)) or []
    if ADMIN_URI not in names or any(n.startswith(MEMBER_URI_PREFIX) for n in names):
        raise TlsError("certificate is not the admin's")
