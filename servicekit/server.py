"""grpc.aio server plumbing shared by both services.

Health names: `""` (overall, follows readiness), `liveness` (the process is up),
`readiness` (the service can do its work), and each service's full name.

Shutdown (SIGTERM or SIGINT): readiness, overall and service names flip to
NOT_SERVING, watch streams are told to end at once (`Lifecycle.stopping`), new calls are
refused with UNAVAILABLE (servicekit.drain), and calls in flight get `grace_s` to finish
before the rest are cancelled; then `serve()` returns and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from servicekit.auth import Admit, Roles
from servicekit.concurrency import Kinds, Limits, Slots
from servicekit.decoding import DecodeGuard
from servicekit.drain import Drain, DrainInterceptor
from servicekit.gate import GateInterceptor
from servicekit.metrics import MetricsInterceptor, Registry
from servicekit.reflection import add_reflection
from servicekit.security import Security, listen
from servicekit.tracing import Tracing

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = "readiness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServerOptions:
    """Transport limits set on purpose (gRPC channel arguments); see docs/operations.md#server-options-both-services."""

    # Each service sets its own; a request over it is refused by gRPC before it is read (RESOURCE_EXHAUSTED).
    max_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    max_connection_age_ms: int = 300_000
    max_connection_age_grace_ms: int = 60_000
    # A connection with no call for this long is closed (GOAWAY): idle connections hold memory and a port.
    max_connection_idle_ms: int = 300_000
    # From accepting the TCP connection to the client's HTTP/2 SETTINGS (TLS handshake included): a client
    # that connects and says nothing is dropped after this, not after gRPC's default of 120 s.
    handshake_timeout_ms: int = 10_000
    # Streams (calls) open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    max_concurrent_streams: int = 100
    # Headers of one call: over the soft limit some calls are refused, over the hard one (announced as
    # SETTINGS_MAX_HEADER_LIST_SIZE) all are. Credentials and a trace context fit in far less.
    max_header_bytes: int = 8 * 1024
    absolute_max_header_bytes: int = 16 * 1024
    # Not settable here: gRPC Python 1.85's server announces a 4 MiB stream window and 4 MiB frames whatever
    # grpc.http2.lookahead_bytes / max_frame_size say (tests/hostile/test_transport_limits.py measures it), and
    # lets a call whose message is being read send all of it; memory is bounded by max_message_bytes x slots.
    # Calls beyond this are refused by gRPC itself with RESOURCE_EXHAUSTED, before any interceptor: a backstop
    # above the gate's own limits (servicekit.concurrency); None leaves it to those.
    max_concurrent_rpcs: int | None = None

    def channel_args(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_ping_strikes", 2),
            # Closing connections after a while makes clients re-resolve and spread over new replicas.
            ("grpc.max_connection_age_ms", self.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_ms),
            ("grpc.max_connection_idle_ms", self.max_connection_idle_ms),
            ("grpc.server_handshake_timeout_ms", self.handshake_timeout_ms),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_metadata_size", self.max_header_bytes),
            ("grpc.absolute_max_metadata_size", self.absolute_max_header_bytes),
        ]


# The plaintext health port: Health requests are a service name, so messages stay small.
HEALTH_PORT_OPTIONS = ServerOptions(max_message_bytes=64 * 1024, max_concurrent_streams=16)
# Limits of a server whose service gives none (tests): sized like the gateway's.
DEFAULT_LIMITS = Limits(max_calls=256, max_calls_per_caller=64, max_streams=256, max_streams_per_caller=64)


class DrainingHealthServicer(health.aio.HealthServicer):
    """The stock health servicer, except that Watch streams end once shutdown begins.

    A Watch is a long-lived stream: left open it would hold the drain for the whole grace.
    """

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        condition = self._server_watchers[request.service]
        self._watcher_count_by_service[request.service] += 1
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                    last_status = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._watcher_count_by_service[request.service] -= 1
            if self._watcher_count_by_service[request.service] == 0:
                del self._server_watchers[request.service]
                del self._watcher_count_by_service[request.service]


class Lifecycle:
    """Health states and the shutdown signal of one server."""

    def __init__(self, service_names: Sequence[str]) -> None:
        self.health = DrainingHealthServicer()
        self.service_names = tuple(service_names)
        self.drain = Drain()
        # Set at shutdown: long-lived streams (watches, waits) end when they see it.
        self.stopping = self.drain.stopping
        self._ready: bool | None = None  # what the health states say now
        self._service_ready = False  # what the service says (set_ready)
        self.saturated = False  # no slot for another call (servicekit.concurrency)
        self._updates: set[asyncio.Task[None]] = set()
        self.limits = DEFAULT_LIMITS  # the server's, as build_server resolved them (the health port's too)
        self.slots: Slots | None = None  # the main port's calls in flight (set by build_server)

    async def start(self, *, ready: bool) -> None:
        await self.health.set(LIVENESS, SERVING)
        await self.set_ready(ready)

    async def set_ready(self, ready: bool) -> None:
        """The service can do its work (or not); readiness also needs a free slot for a call."""
        self._service_ready = ready
        await self._publish()

    def set_saturated(self, saturated: bool) -> None:
        """Called by the slots when the server fills up or has room again (synchronously, from a call)."""
        self.saturated = saturated
        task = asyncio.get_running_loop().create_task(self._publish())
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)

    async def _publish(self) -> None:
        ready = self._service_ready and not self.saturated
        if self.stopping.is_set() or ready == self._ready:
            return
        self._ready = ready
        state = SERVING if ready else NOT_SERVING
        for name in ("", READINESS, *self.service_names):
            await self.health.set(name, state)

    async def begin_shutdown(self) -> None:
        self._service_ready = False
        await self._publish()
        self.stopping.set()
        await self.health.enter_graceful_shutdown()


def build_server(
    options: ServerOptions,
    lifecycle: Lifecycle,
    add_servicers: Iterable[Callable[[grpc.aio.Server], None]],
    full_service_names: Sequence[str],
    *,
    metrics: Registry | None = None,
    tracing: Tracing | None = None,
    security: Security | None = None,
    roles: Roles | None = None,
    admit: Admit | None = None,
    limits: Limits = DEFAULT_LIMITS,
    kinds: Kinds | None = None,
) -> grpc.aio.Server:
    """A grpc.aio server with the servicers, health and reflection registered.

    Interceptors, outermost first: the trace span (so it covers everything), the Prometheus counts
    (so calls refused unauthenticated or while draining are counted too), the gate, the drain.
    The gate (servicekit.gate) decides on the headers: with a callers file in `security`, every call
    outside Health and reflection is authenticated and needs its method's role from `roles`; `admit`
    then applies per-caller rates; every call takes a slot of `limits` (the service's defaults, flags
    override them), long-lived ones by their kind in `kinds`.
    """
    security = security or Security(insecure_dev=True)
    interceptors: list[grpc.aio.ServerInterceptor] = [*(tracing.server_interceptors() if tracing else [])]
    if metrics is not None:
        interceptors.append(MetricsInterceptor(metrics))
    lifecycle.limits = security.limits(limits)
    slots = lifecycle.slots = Slots(lifecycle.limits, kinds, metrics=metrics, on_saturated=lifecycle.set_saturated)
    mtls = security.tls is not None and security.tls.client_ca is not None
    interceptors.append(GateInterceptor(slots, security.callers_source(), roles, admit, mtls=mtls))
    interceptors.append(DrainInterceptor(lifecycle.drain))
    # Innermost, so that the drain, the counts and the spans see undecodable calls too.
    interceptors.append(DecodeGuard())
    # SO_REUSEPORT off unless asked for: a second server on a port in use must fail, not split the traffic.
    server = grpc.aio.server(
        options=[*options.channel_args(), ("grpc.so_reuseport", int(security.reuse_port))],
        maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        interceptors=interceptors,
    )
    for add in add_servicers:
        add(server)
    health_pb2_grpc.add_HealthServicer_to_server(lifecycle.health, server)
    if not security.no_reflection:
        add_reflection(server, (*full_service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
    return server


def health_only_server(lifecycle: Lifecycle, host: str, port: int, limits: Limits = DEFAULT_LIMITS) -> grpc.aio.Server:
    """A plaintext server of the health service alone, for probes that cannot speak TLS (the kubelet's).

    Its Watch streams have slots of their own (`limits.max_open_streams`), apart from the main port's.
    """
    gate = GateInterceptor(Slots(limits))
    server = grpc.aio.server(
        options=[*HEALTH_PORT_OPTIONS.channel_args(), ("grpc.so_reuseport", 0)], interceptors=[gate, DecodeGuard()]
    )
    health_pb2_grpc.add_HealthServicer_to_server(lifecycle.health, server)
    listen(server, host, port, Security(insecure_dev=True))
    return server


async def serve(
    server: grpc.aio.Server,
    lifecycle: Lifecycle,
    *,
    grace_s: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    probes: tuple[str, int] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain: refuse new calls, give in-flight ones `grace_s`.

    `probes` (host, port): also serve Health alone there, in plaintext (`--health-port`), its Watch streams
    limited to `max_open_streams` of the limits `build_server` was given.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probe_server = health_only_server(lifecycle, *probes, limits=lifecycle.limits) if probes is not None else None
    await server.start()
    if probe_server is not None:
        await probe_server.start()
    await stop.wait()
    await shutdown(server, lifecycle, grace_s=grace_s)
    if probe_server is not None:
        await probe_server.stop(0)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


# After the grace, how long calls get to end themselves with their own status before they are cancelled.
CUT_WAIT_S = 2.0


async def shutdown(server: grpc.aio.Server, lifecycle: Lifecycle, *, grace_s: float) -> None:
    """Refuse new calls, give those running `grace_s`, then tell the rest to end (Drain.cut), then stop."""
    drain = lifecycle.drain
    log.info("shutting down", extra={"grace_s": grace_s, "in_flight": drain.in_flight})
    await lifecycle.begin_shutdown()
    # New calls are refused with UNAVAILABLE from here on; those already running get the grace.
    try:
        await asyncio.wait_for(drain.idle.wait(), grace_s)
    except TimeoutError:
        log.warning("grace over; ending calls still running", extra={"in_flight": drain.in_flight})
        drain.cut.set()
        try:
            await asyncio.wait_for(drain.idle.wait(), CUT_WAIT_S)
        except TimeoutError:
            log.warning("cancelling calls that did not end", extra={"in_flight": drain.in_flight})
    await server.stop(0)
