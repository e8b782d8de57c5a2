"""Builds and runs the gateway's grpc.aio server: servicers, health, reflection, telemetry, draining."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from gateway_service.api.servicers import add_to_server
from gateway_service.app import AdapterFactory, Gateway, build_gateway, default_factory
from gateway_service.config import GatewayConfig, ServeSettings
from gateway_service.config.serve import LIMITS
from gateway_service.instruments import GatewayMetrics
from gateway_service.schema_channel import SchemaChannel, UsageSend, metrics_sender, usage_sender, usage_spent
from gateway_service.telemetry import Send
from gateway_service.usage.seed import seed_spend
from llmgateway.v1 import chat_service_pb2, provider_service_pb2
from servicekit.auth import roles_of
from servicekit.metrics import Endpoint, Registry
from servicekit.security import listen
from servicekit.server import Lifecycle, ServerOptions, build_server
from servicekit.startup import StartedServer, metrics_endpoint, until_stopped
from servicekit.tls import ClientCredentials
from servicekit.tracing import Tracing
from servicekit.tracing import configure as configure_tracing

if TYPE_CHECKING:  # aiohttp.web and the HTTP face are imported only with --openai-port (openai_port below)
    from gateway_service.openai_http.server import Serving

log = logging.getLogger(__name__)
SEED_TIMEOUT_S = 10.0  # reading the month's spend from the ledger at start-up (memory-kept dollar budgets)

SERVICE_NAMES = (
    chat_service_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
)
# The role each method needs (docs/security.md).
ROLES = {
    **roles_of(chat_service_pb2.DESCRIPTOR.services_by_name["ChatService"], "chat"),
    **roles_of(provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"], "providers.read"),
}
# Long-lived calls, limited per kind as well as with all calls (servicekit.concurrency; docs "Limits").
KINDS = {
    "/llmgateway.v1.ChatService/Chat": "chats",
    "/llmgateway.v1.ChatService/StreamChat": "chats",
    "/llmgateway.v1.ProviderService/WatchProviders": "watches",
}


def schema_reporting(
    address: str | None, config: GatewayConfig, tracing: Tracing, client: ClientCredentials
) -> tuple[Send | None, UsageSend | None, SchemaChannel | None]:
    """WriteMetrics and RecordUsage to the schema service (when there is one) on one channel that follows
    credential rotation."""
    if not address:
        return None, None, None
    # gRPC's reconnect backoff no longer than the senders', and 5 s at most: a schema service that is back
    # is found within seconds.
    retry_max_s = min(config.telemetry.retry_max_s, config.usage.retry_max_s, 5.0)
    channel = SchemaChannel(address, client, tracing, reconnect_max_s=retry_max_s)
    return metrics_sender(channel), usage_sender(channel), channel


@dataclass
class Running(StartedServer):
    """A prepared server: its port, the gateway state and the lifecycle; `async with` stops and closes it."""

    server: grpc.aio.Server
    port: int
    gateway: Gateway
    lifecycle: Lifecycle
    channel: SchemaChannel | None
    metrics: Registry
    tracing: Tracing
    endpoint: Endpoint | None = None
    openai: Serving | None = None  # the OpenAI-compatible HTTP port, with --openai-port

    async def close(self) -> None:
        if self.openai is not None:
            await self.openai.close()
        await self.gateway.close()
        if self.channel is not None:
            await self.channel.close()
        if self.endpoint is not None:
            self.endpoint.close()
        self.tracing.shutdown()


async def prepare(
    config: GatewayConfig,
    settings: ServeSettings,
    factory: AdapterFactory = default_factory,
    tracing: Tracing | None = None,
    *,
    health_clock: Callable[[], float] | None = None,
) -> Running:
    """Build the gateway and its server bound to `settings.host:port` (port 0 picks a free one), not started.

    Tracing is configured from the OTEL_* environment unless given (tests pass an in-memory exporter);
    `health_clock` is the monotonic clock of breakers, cooldowns and the slow ramp (tests move it by hand).
    """
    tracing = tracing or configure_tracing("gateway")
    address, security = config.schema_service, settings.security
    send, record_usage, channel = schema_reporting(address, config, tracing, settings.schema_client)
    metrics = Registry()
    gateway = build_gateway(
        config,
        factory,
        send,
        record_usage=record_usage,
        instruments=GatewayMetrics(metrics),
        tracing=tracing,
        caller_rates=security.callers is not None,
        health_clock=health_clock,
    )
    if channel is not None and gateway.spend is not None and config.limits.backend == "memory":
        await seed_spend(gateway.spend, usage_spent(channel), timeout_s=SEED_TIMEOUT_S)  # before it serves
    lifecycle = Lifecycle(SERVICE_NAMES)
    # A request larger than a chat needs is refused by gRPC before it is read (RESOURCE_EXHAUSTED).
    options = ServerOptions(max_message_bytes=config.requests.max_request_bytes)
    server = build_server(
        options,
        lifecycle,
        [lambda s: add_to_server(s, gateway, lifecycle)],
        SERVICE_NAMES,
        metrics=metrics,
        tracing=tracing,
        security=security,
        roles=ROLES,
        admit=gateway.caller_rates.admit if gateway.caller_rates is not None else None,
        limits=LIMITS,
        kinds=KINDS,
    )
    port = listen(server, settings.host, settings.port, security)
    endpoint = metrics_endpoint(metrics, settings)
    openai = await openai_port(gateway, lifecycle, settings) if settings.openai_port is not None else None
    await lifecycle.start(ready=True)
    gateway.start_background()
    unconfigured = [f"{p.name} ({p.credential_source})" for p in config.providers if not p.configured]
    log.info(
        "gateway listening",
        extra={
            "port": port,
            "openai_port": openai.port if openai is not None else None,
            "config": config.source,
            "schema_service": config.schema_service,
            "unconfigured_providers": unconfigured,
        },
    )
    return Running(server, port, gateway, lifecycle, channel, metrics, tracing, endpoint, openai)


async def openai_port(gateway: Gateway, lifecycle: Lifecycle, settings: ServeSettings) -> Serving:
    """The OpenAI-compatible face: the gRPC port's callers, TLS files and call slots (gateway_service.openai_http)."""
    from gateway_service.openai_http.server import Doors, serve

    security = settings.security
    assert lifecycle.slots is not None  # build_server made them
    doors = Doors(
        lifecycle.slots,
        security.callers_source(),
        gateway.caller_rates.admit if gateway.caller_rates is not None else None,
        mtls=security.tls is not None and security.tls.client_ca is not None,
    )
    assert settings.openai_port is not None
    return await serve(gateway, doors, lifecycle.drain, settings.host, settings.openai_port, security.tls)


async def start(
    config: GatewayConfig,
    settings: ServeSettings,
    factory: AdapterFactory = default_factory,
    tracing: Tracing | None = None,
    *,
    health_clock: Callable[[], float] | None = None,
) -> Running:
    """Build and start serving (tests; `run` leaves the start to servicekit's `serve`)."""
    running = await prepare(config, settings, factory, tracing, health_clock=health_clock)
    await running.server.start()
    return running


async def run(config: GatewayConfig, settings: ServeSettings) -> None:
    """Serve until SIGTERM, then drain in-flight streams within the grace and exit."""
    settings.security.check()
    running = await prepare(config, settings)
    # The SDKs, protobuf and pydantic leave a large heap of objects that live as long as the process;
    # frozen, they are never traversed again by a full collection (which otherwise pauses a request).
    gc.freeze()
    await until_stopped(running, settings)
