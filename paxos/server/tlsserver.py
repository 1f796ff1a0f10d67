"""A server's side of TLS: its credentials, reloaded when the files change, and who may call what.

``ServerTls`` gives gRPC a certificate fetcher: on each new connection
(checked at most once per ``TLS_RELOAD_CHECK_SECONDS``) it looks at the
server's ``NAME.pem``, ``NAME-key.pem`` and ``ca.pem``, and when any of them
changed it loads them again, so a rotated certificate is used by new
connections without a restart (connections already open keep theirs).  A
half-written or mismatched pair is not loaded: the server keeps the last good
one and logs why, once per change.

Under ``--client-auth none`` a peer proves itself by a signed proof
(paxos/common/proofs.py), which ``ServerTls.member_from_proof`` checks; the
admin's ``ChangeMembers`` and ``Backup`` calls likewise.

The rule for the client API is in paxos/server/tlsaccess.py, which a plaintext
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
from cryptography.hazmat.primitives import serialization

from paxos.common.limits import TLS_RELOAD_CHECK_SECONDS
from paxos.common.proofs import check_admin_proof, check_member_proof, issued_by_one_of, member_proof
from paxos.common.tlsfiles import (
    CA_CERT_FILE,
    KeyPair,
    TlsError,
    cert_file,
    check_dir,
    key_file,
    read_pem,
)
from paxos.server.tlsaccess import CLIENT_AUTH_CERT, CLIENT_AUTH_MODES

log = logging.getLogger("paxos.tls")


_FileStamp = tuple[int, int, int]  # inode, size, mtime in ns


def _stamp(path: Path) -> _FileStamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


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
