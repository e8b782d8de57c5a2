"""Settings of `gateway-service serve`: its flags, else the environment, else these defaults (pydantic-settings)."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gateway_service.config.limits import LimitSettings
from servicekit.concurrency import Limits
from servicekit.security import Security
from servicekit.settings import ServiceSettings, setting
from servicekit.tls import ClientCredentials

# A chat may hold up to max_request_bytes (4 MiB) while it arrives: 32 per caller is 128 MiB (bench/attack.py).
LIMITS = Limits(max_calls=128, max_calls_per_caller=32, max_streams=128, max_streams_per_caller=32)
GatewaySecurity = Security.with_limits("GatewaySecurity", LIMITS)


class ServeSettings(ServiceSettings):
    """Where the gateway listens, where its config file is, and how it stops."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    config: Path | None = setting(None, flag="--config", env="GATEWAY_CONFIG", metavar="FILE")
    """The YAML config file (its keys: docs/configuration.md); without one a built-in default names the common
    providers."""
    host: str = setting("[::]", flag="--host")
    """Listen address."""
    port: int = setting(50051, flag="--port", metavar="PORT", ge=0, le=65535)
    """Listen port (0 picks a free one)."""
    openai_port: int | None = setting(None, flag="--openai-port", env="OPENAI_PORT", metavar="PORT", ge=0, le=65535)
    """Also serve the OpenAI-compatible HTTP API (POST /v1/chat/completions, GET /v1/models) on this port, with
    the same TLS and callers (docs/openai.md); off unless given (0 picks a free one)."""
    shutdown_grace_s: float = setting(20.0, flag="--shutdown-grace", ge=0, metavar="S")
    """Seconds in-flight streams get to finish after SIGTERM."""
    metrics_port: int = setting(0, flag="--metrics-port", env="METRICS_PORT", metavar="PORT", ge=0, le=65535)
    """Prometheus /metrics port on all interfaces (the manifests use 9464); 0 turns it off."""
    security: Security = Field(default_factory=GatewaySecurity)
    """TLS, callers and the rest of the security flags both services share (servicekit.security)."""
    schema_service_tls: bool = setting(False, flag="--schema-service-tls", env="SCHEMA_SERVICE_TLS", const=True)
    """Reach the schema service over TLS, trusting the system's CAs unless --schema-service-ca names one."""
    schema_service_ca: Path | None = setting(
        None, flag="--schema-service-ca", env="SCHEMA_SERVICE_CA_FILE", metavar="FILE"
    )
    """CA of the schema service's certificate (PEM); implies TLS."""
    schema_service_cert: Path | None = setting(
        None, flag="--schema-service-cert", env="SCHEMA_SERVICE_CERT_FILE", metavar="FILE"
    )
    """The gateway's client certificate (PEM) when the schema service requires mTLS; implies TLS."""
    schema_service_key: Path | None = setting(
        None, flag="--schema-service-key", env="SCHEMA_SERVICE_KEY_FILE", metavar="FILE"
    )
    """That certificate's private key (PEM)."""
    schema_service_token_file: Path | None = setting(
        None, flag="--schema-service-token-file", env="SCHEMA_SERVICE_TOKEN_FILE", metavar="FILE"
    )
    """A file holding the gateway's bearer token for the schema service (sent only over TLS)."""

    @property
    def schema_client(self) -> ClientCredentials:
        """How the gateway connects to the schema service."""
        tls = self.schema_service_tls or self.schema_service_ca is not None or self.schema_service_cert is not None
        return ClientCredentials(
            tls=tls,
            ca=self.schema_service_ca,
            cert=self.schema_service_cert,
            key=self.schema_service_key,
            token_file=self.schema_service_token_file,
        )


def redis_host_problem(limits: LimitSettings) -> str | None:
    """With `backend: redis`, whether the Redis host is a name that does not exist (the resolver says so: a typo
    or a wrong Service name, which no retry mends), as the one line `serve` and --check-config stop with. A
    resolver that cannot answer now (EAI_AGAIN) or a Redis that refuses is an outage, not a config error: the
    gateway starts and budgets follow their documented outage behaviour (rate budgets fail open, dollar budgets
    `on_backend_error`)."""
    if limits.backend != "redis" or limits.redis_url is None:
        return None
    parts = urlsplit(limits.redis_url.get_secret_value())
    if parts.scheme == "unix" or not parts.hostname:
        return None
    try:
        socket.getaddrinfo(parts.hostname, parts.port or 6379, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            return None
        return f"limits.redis_url: cannot resolve the Redis host {parts.hostname!r} ({exc.strerror})"
    return None
