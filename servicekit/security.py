"""How a server is reached and who may call it: TLS files, the callers file, and the dev escape hatch.

Secure by default: `serve` refuses to start without TLS and a callers file unless `--insecure-dev`
is given, and then says so with a WARNING at start-up. The port is bound without SO_REUSEPORT
(gRPC's default would let a second server share it silently), so a port in use fails at once.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
from pathlib import Path
from typing import Any

import grpc
from pydantic import create_model, model_validator

from servicekit.callers import CallersSource, SetupError
from servicekit.concurrency import Limits
from servicekit.settings import ServiceSettings, env_name, extra, setting
from servicekit.tls import TlsFiles, server_credentials

log = logging.getLogger(__name__)


class Security(ServiceSettings):
    """How a server is reached and who may call it (docs/security.md); the same flags on both services."""

    tls_cert: Path | None = setting(None, flag="--tls-cert", env="TLS_CERT_FILE", metavar="FILE")
    """The server's certificate chain (PEM); with --tls-key, the server speaks TLS only."""
    tls_key: Path | None = setting(None, flag="--tls-key", env="TLS_KEY_FILE", metavar="FILE")
    """The server certificate's private key (PEM)."""
    tls_client_ca: Path | None = setting(None, flag="--tls-client-ca", env="TLS_CLIENT_CA_FILE", metavar="FILE")
    """mTLS: every client must present a certificate signed by this CA (PEM)."""
    callers: Path | None = setting(None, flag="--callers", env="CALLERS_FILE", metavar="FILE")
    """Who may call, with which credentials and roles (YAML); checked on every call but Health and reflection."""
    insecure_dev: bool = setting(False, flag="--insecure-dev", env="INSECURE_DEV", const=True)
    """Allow serving without TLS and/or a callers file: local development only (a WARNING says so at start)."""
    no_reflection: bool = setting(False, flag="--no-reflection", env="NO_REFLECTION", const=True)
    """Do not serve gRPC reflection (served by default, open like Health)."""
    reuse_port: bool = setting(False, flag="--reuse-port", env="REUSE_PORT", const=True)
    """Share the port with other processes (SO_REUSEPORT), e.g. one per core; off, a port in use stops the start."""
    health_port: int | None = setting(None, flag="--health-port", env="HEALTH_PORT", metavar="PORT", ge=0, le=65535)
    """Also serve the health service alone on this port, in plaintext, for probes that cannot speak TLS."""
    max_calls: int | None = setting(None, flag="--max-calls", env="MAX_CALLS", metavar="N", gt=0)
    """Calls served at once, all callers together; at the limit readiness is NOT_SERVING and more calls are refused
    with RESOURCE_EXHAUSTED + RetryInfo before their messages are read."""
    max_calls_per_caller: int | None = setting(
        None, flag="--max-calls-per-caller", env="MAX_CALLS_PER_CALLER", metavar="N", gt=0
    )
    """Calls one caller of the callers file may have at once."""
    max_streams: int | None = setting(None, flag="--max-streams", env="MAX_STREAMS", metavar="N", gt=0)
    """Long-lived calls at once per kind (chats; watches; metric streams), all callers together."""
    max_streams_per_caller: int | None = setting(
        None, flag="--max-streams-per-caller", env="MAX_STREAMS_PER_CALLER", metavar="N", gt=0
    )
    """Long-lived calls of one kind one caller may have at once."""
    max_open_streams: int | None = setting(None, flag="--max-open-streams", env="MAX_OPEN_STREAMS", metavar="N", gt=0)
    """Health Watch and reflection streams (no credentials needed) at once, on each port (--health-port too)."""

    @classmethod
    def with_limits(cls, name: str, limits: Limits) -> type[Security]:
        """This model with a service's `limits` as the defaults of its limit settings: written once, in the
        service's config, they are what its server uses, what `--help` shows and what the reference lists."""
        fields: dict[str, Any] = {}
        for limit in dataclasses.fields(Limits):
            info = cls.model_fields[limit.name]
            spec = extra(info)
            default = getattr(limits, limit.name)
            fields[limit.name] = (
                int,
                setting(
                    default,
                    flag=spec["flag"],
                    env=env_name(cls, limit.name),
                    metavar=spec["metavar"],
                    gt=0,
                    description=info.description,
                ),
            )
        return create_model(name, __base__=cls, __doc__=cls.__doc__, **fields)

    @model_validator(mode="after")
    def _pairs(self) -> Security:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return self

    @property
    def tls(self) -> TlsFiles | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca)

    def check(self) -> None:
        """SetupError when the server would run without TLS or callers and nobody asked for that."""
        missing = [what for what, given in (("TLS", self.tls), ("a callers file", self.callers)) if not given]
        if missing and not self.insecure_dev:
            raise SetupError(
                f"refusing to serve without {' and '.join(missing)}: give --tls-cert/--tls-key and --callers, "
                "or --insecure-dev for local development"
            )
        if missing:
            log.warning(
                "INSECURE DEV MODE: serving without %s; anyone who reaches the port may call every method",
                " and ".join(missing),
                extra={"insecure_dev": True},
            )

    def limits(self, defaults: Limits) -> Limits:
        """The limits this model holds (a service's model, `with_limits`, holds all of them), `defaults` for any
        it leaves unset."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(Limits) if getattr(self, f.name) is not None}
        return dataclasses.replace(defaults, **given)

    def callers_source(self) -> CallersSource | None:
        return CallersSource(self.callers) if self.callers is not None else None


def listen(server: grpc.aio.Server, host: str, port: int, security: Security) -> int:
    """Bind `host:port` (TLS when configured); the port bound, or SetupError "port N is in use"."""
    address = f"{host}:{port}"
    try:
        if security.tls is not None:
            return int(server.add_secure_port(address, server_credentials(security.tls)))
        return int(server.add_insecure_port(address))
    except RuntimeError:  # gRPC says only "Failed to bind"; ask the OS why
        raise SetupError(_why_not_bound(host, port)) from None


def _why_not_bound(host: str, port: int) -> str:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((bare, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} is in use (another server listens on {host}:{port})"
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    return f"cannot listen on {host}:{port}"
