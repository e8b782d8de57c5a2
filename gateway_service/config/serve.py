"""Settings of `gateway-service serve`: its flags, else the environment, else these defaults (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings, setting


class ServeSettings(ServiceSettings):
    """Where the gateway listens, where its config file is, and how it stops."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    config: Path | None = setting(None, flag="--config", env="GATEWAY_CONFIG", metavar="FILE")
    """The YAML config file (its keys: "Gateway config file" below); without one a built-in default names the
    common providers."""
    host: str = setting("[::]", flag="--host")
    """Listen address."""
    port: int = setting(50051, flag="--port", metavar="PORT", ge=0, le=65535)
    """Listen port (0 picks a free one)."""
    shutdown_grace_s: float = setting(20.0, flag="--shutdown-grace", ge=0, metavar="S")
    """Seconds in-flight streams get to finish after SIGTERM."""
    metrics_port: int = setting(0, flag="--metrics-port", env="METRICS_PORT", metavar="PORT", ge=0, le=65535)
    """Prometheus /metrics port on all interfaces (the manifests use 9464); 0 turns it off."""
