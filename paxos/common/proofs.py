"""Signed proofs of who is calling, for calls that carry no client certificate.

Under ``--client-auth none`` gRPC does not ask callers for a certificate at
all (it can only require one or not ask), so a peer opening a stream sends
its certificate and a signature, made with its key, over the receiver's name
and the time (``member_proof``); the receiver checks both against the CA
(``check_member_proof``).  TLS keeps the proof from anyone but the receiver,
and the receiver's name in it keeps the receiver from replaying it
elsewhere.  The admin proves itself on each ``ChangeMembers`` or ``Backup``
call in the same way (``admin_proof``, other words signed), so that under
``none`` too only the holder of ``admin.pem`` changes the members.  The
client signs, the server checks: both import this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from paxos.common.limits import MAX_PEM_BYTES, PEER_PROOF_MAX_AGE_SECONDS
from paxos.common.tlsfiles import ADMIN_URI, MEMBER_URI_PREFIX, KeyPair, TlsError


def issued_by_one_of(cert: x509.Certificate, ca_pem: bytes) -> bool:
    """True when one of the CAs in ``ca_pem`` (one, or several while a CA is replaced) signed ``cert``."""
    for ca in x509.load_pem_x509_certificates(ca_pem):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


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
