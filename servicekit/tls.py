"""TLS for both servers, with certificates reloaded when their files change, and for their clients.

The server credentials are gRPC's dynamic ones: gRPC asks `CertificateReloader` for a configuration
at each new handshake, and it answers with a new one only when a file's modification time or size
changed and the new files load (a certificate written before its key is not taken half-way).
Connections already open keep the session they negotiated, so rotation drops no stream.

A certificate outside its validity is never taken silently: at start-up it is served with an ERROR
(clients will refuse it, and the log says why), and a rotation to one is refused (the valid pair stays);
one that ends within EXPIRY_WARNING gets a WARNING at start and at each rotation.

With `client_ca` (mTLS), every client must present a certificate chaining to that CA: gRPC's Python
credentials either require a client certificate or never ask for one. A caller may still send a
bearer token over such a connection, and the token then decides who it is (servicekit.auth).
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from servicekit.callers import SetupError

if TYPE_CHECKING:  # imported in load(), only when TLS is configured: cryptography is about 8 MB of RSS
    from cryptography import x509

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the server: its certificate chain, its key, and the CA of client certificates (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        stats = [os.stat(p) for p in (self.cert, self.key, self.client_ca) if p is not None]
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The files as a gRPC certificate configuration, once the key is known to match the certificate."""
        return self.load()[0]

    def load(self) -> tuple[grpc.ServerCertificateConfiguration, x509.Certificate]:
        """The configuration and the server's own (first) certificate."""
        try:
            # The standard library's loader checks the chain, the key and that they belong together.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                ssl.create_default_context(cafile=self.client_ca)
            cert, key = self.cert.read_bytes(), self.key.read_bytes()
            ca = self.client_ca.read_bytes() if self.client_ca is not None else None
            from cryptography import x509

            leaf = x509.load_pem_x509_certificate(cert)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise SetupError(f"TLS files {self.describe()}: {exc}") from None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca), leaf

    def describe(self) -> str:
        ca = f", client CA {self.client_ca}" if self.client_ca is not None else ""
        return f"certificate {self.cert}, key {self.key}{ca}"


EXPIRY_WARNING = datetime.timedelta(days=7)


def validity(leaf: x509.Certificate, now: datetime.datetime | None = None) -> tuple[str, str] | None:
    """("expired" | "not yet valid" | "expires soon", when) for a certificate a server should not serve quietly."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now >= leaf.not_valid_after_utc:
        return "expired", leaf.not_valid_after_utc.isoformat()
    if now < leaf.not_valid_before_utc:
        return "not yet valid", leaf.not_valid_before_utc.isoformat()
    if leaf.not_valid_after_utc - now < EXPIRY_WARNING:
        return "expires soon", leaf.not_valid_after_utc.isoformat()
    return None


class CertificateReloader:
    """gRPC's certificate configuration fetcher: a new configuration when the files changed, else None."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.initial, leaf = files.load()
        problem = validity(leaf)
        if problem is not None:
            level = logging.WARNING if problem[0] == "expires soon" else logging.ERROR
            log.log(level, f"TLS certificate {problem[0]}", extra={"files": files.describe(), "at": problem[1]})
        self.stamp = files.stamp()
        self._refused: tuple[tuple[int, int, int], ...] | None = None

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = None
        try:
            stamp = self.files.stamp()
            if stamp in (self.stamp, self._refused):
                return None
            configuration, leaf = self.files.load()
            problem = validity(leaf)
            if problem is not None and problem[0] != "expires soon":
                raise SetupError(f"the new certificate is {problem[0]} ({problem[1]})")
        except (OSError, SetupError) as exc:
            # Mid-rotation (one file written, not the other) or a bad file: keep serving the old pair.
            self._refused = stamp
            log.error("TLS files not reloaded; the previous ones stay in use", extra={"error": str(exc)})
            return None
        self.stamp = stamp
        log.info("TLS certificate reloaded", extra={"files": self.files.describe()})
        if problem is not None:
            log.warning("TLS certificate expires soon", extra={"files": self.files.describe(), "at": problem[1]})
        return configuration


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    reloader = CertificateReloader(files)
    required = files.client_ca is not None
    return grpc.dynamic_ssl_server_credentials(reloader.initial, reloader, require_client_authentication=required)


@dataclass(frozen=True)
class ClientCredentials:
    """How a client of one of our servers connects: TLS (with `ca` to trust instead of the system's
    roots, and its own certificate for mTLS) and the bearer token it sends (read from `token_file`)."""

    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token_file: Path | None = None

    def channel(
        self, address: str, options: Sequence[tuple[str, Any]] = (), interceptors: Sequence[Any] | None = None
    ) -> grpc.aio.Channel:
        if not self.tls:
            if self.token_file is not None:
                raise SetupError("a token is only sent over TLS: give the schema service's CA (or enable TLS)")
            return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
        return grpc.aio.secure_channel(address, self.credentials(), options=options, interceptors=interceptors)

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise SetupError("a client certificate needs its key, and a key its certificate")
        ca, cert, key, token = (_read(p) for p in (self.ca, self.cert, self.key, self.token_file))
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        if token is None:
            return credentials
        # Sent as `authorization: Bearer <token>` on every call.
        bearer = grpc.access_token_call_credentials(token.decode().strip())
        return grpc.composite_channel_credentials(credentials, bearer)


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SetupError(f"{path}: {exc.strerror}") from None


class HttpsContexts:
    """The same TLS files as an `ssl.SSLContext` for an HTTP server (aiohttp), reloaded like the gRPC ones.

    At each handshake the files' stamp is compared (one stat per file); when they changed and the new pair
    loads and is within its validity, the handshake and the ones after it use a new context (set through
    `sni_callback`, the standard library's way to pick a context per connection). TLS 1.2 at least, as on the
    gRPC ports; with `client_ca`, a client certificate chaining to it is required.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._grpc = CertificateReloader(files)  # the same start-up checks and log lines as the gRPC port
        self.context = self._build()
        self._current = self.context
        self.stamp = self._grpc.stamp

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.files.cert, self.files.key)
        if self.files.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.files.client_ca)
        context.sni_callback = self._pick
        return context

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if self._grpc() is not None:  # the files changed and the new ones are valid
            try:
                self._current = self._build()
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS files not reloaded for HTTPS", extra={"error": str(exc)})
        if self._current is not context:
            connection.context = self._current
