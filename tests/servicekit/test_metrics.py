"""servicekit.metrics: every RPC counted by method and final code, timed, and scraped over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from servicekit.handlers import WrappingInterceptor
from servicekit.metrics import Endpoint, MetricsInterceptor, Registry
from servicekit.security import Security, listen
from servicekit.server import Lifecycle, ServerOptions, build_server
from tests.servicekit.conftest import (
    ROLES,
    SERVICE_NAMES,
    Pki,
    add_base_servicers,
    callers_yaml,
    invoke,
    token_of,
)

HEALTH = "grpc.health.v1.Health"


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Endpoint]]:
    metrics = Registry()
    server = grpc.aio.server(interceptors=[MetricsInterceptor(metrics)])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((HEALTH, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    endpoint = Endpoint(metrics, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, endpoint
    await channel.close()
    endpoint.close()
    await server.stop(0)


def scrape(endpoint: Endpoint) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def handled(method: str, grpc_type: str, code: str, caller: str = "none") -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"grpc_service": method.rsplit("/", 1)[0], "grpc_method": method.rsplit("/", 1)[1]}
    labels |= {"grpc_type": grpc_type, "grpc_code": code, "caller": caller}
    return "grpc_server_handled_total", tuple(sorted(labels.items()))


async def test_calls_are_counted_by_method_type_and_final_code(served: tuple[grpc.aio.Channel, Endpoint]) -> None:
    channel, endpoint = served
    stub = health_pb2_grpc.HealthStub(channel)
    await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert [r async for r in call]
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary("/no.such.Service/Method")(b"", timeout=5)

    samples = scrape(endpoint)
    assert samples[handled(f"{HEALTH}/Check", "unary", "OK")] == 2
    assert samples[handled(f"{HEALTH}/Check", "unary", "NOT_FOUND")] == 1
    info = "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert samples[handled(info, "bidi_stream", "OK")] == 1
    check = (("grpc_method", "Check"), ("grpc_service", HEALTH), ("grpc_type", "unary"))
    latency = ("grpc_server_handling_seconds_count", check)
    assert samples[latency] == 3
    # An unknown method is answered UNIMPLEMENTED by gRPC itself and never becomes a label.
    assert not any("no.such.Service" in str(labels) for _, labels in samples)


async def test_a_cancelled_call_is_counted_as_cancelled(served: tuple[grpc.aio.Channel, Endpoint]) -> None:
    channel, endpoint = served
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
    call.cancel()
    key = handled(f"{HEALTH}/Watch", "server_stream", "CANCELLED")
    for _ in range(100):  # the server learns of the cancellation asynchronously
        if scrape(endpoint).get(key) == 1:
            break
        await asyncio.sleep(0.02)
    assert scrape(endpoint)[key] == 1


async def test_calls_are_counted_by_authenticated_caller(pki: Pki) -> None:
    callers = pki.folder / "callers-metrics.yaml"
    callers.write_text(callers_yaml())
    metrics = Registry()
    files = pki.server
    security = Security(tls_cert=files.cert, tls_key=files.key, tls_client_ca=files.client_ca, callers=callers)
    lifecycle = Lifecycle(SERVICE_NAMES)
    server = build_server(
        ServerOptions(),
        lifecycle,
        [add_base_servicers],
        SERVICE_NAMES,
        security=security,
        roles=ROLES,
        metrics=metrics,
    )
    port = listen(server, "127.0.0.1", 0, security)
    await lifecycle.start(ready=True)
    await server.start()
    chat = "/llmgateway.v1.ChatService/Chat"
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", pki.client("anyone")) as channel:
            allowed = await invoke(channel, chat, (("authorization", f"Bearer {token_of('chat')}"),))
            refused = await invoke(channel, chat, (("authorization", "Bearer nobody-has-this"),))
    finally:
        await server.stop(0)
    assert allowed.code() == grpc.StatusCode.UNIMPLEMENTED and refused.code() == grpc.StatusCode.UNAUTHENTICATED
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    assert samples[handled(chat.lstrip("/"), "unary", "UNIMPLEMENTED", "only-chat")] == 1
    assert samples[handled(chat.lstrip("/"), "unary", "UNAUTHENTICATED", "none")] == 1


async def _refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    raise AssertionError("unreachable: abort raises")


async def _refuse_after_one(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"one"
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")


@pytest.mark.parametrize(("method", "grpc_type"), [("Refuse", "unary"), ("RefuseAfterOne", "server_stream")])
async def test_an_aborted_call_is_counted_before_its_caller_has_the_status(method: str, grpc_type: str) -> None:
    # abort() sends the status before it raises: a count taken as the call unwinds would come after the
    # caller has the status. A hook inside the metrics holds the unwinding until the count was read.
    released = asyncio.Event()

    @asynccontextmanager
    async def held(method: str, kind: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await released.wait()

    metrics = Registry()
    server = grpc.aio.server(interceptors=[MetricsInterceptor(metrics), WrappingInterceptor(held)])
    handlers = {
        "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
        "RefuseAfterOne": grpc.unary_stream_rpc_method_handler(_refuse_after_one),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Refusals", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = getattr(channel, f"unary_{'unary' if grpc_type == 'unary' else 'stream'}")(
                f"/test.Refusals/{method}"
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                if grpc_type == "unary":
                    await call(b"", timeout=5)
                else:
                    assert [r async for r in call(b"", timeout=5)] == [b"one"]
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
                for s in family.samples
            }
            released.set()
    finally:
        released.set()
        await server.stop(0)
    assert samples[handled(f"test.Refusals/{method}", grpc_type, "PERMISSION_DENIED")] == 1


async def test_process_and_python_collectors_and_no_created_series(served: tuple[grpc.aio.Channel, Endpoint]) -> None:
    channel, endpoint = served
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    names = {name for name, _ in scrape(endpoint)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert {"python_info", "python_gc_objects_collected_total"} <= names
    assert "grpc_server_handled_total" in names
    assert not [name for name in names if name.endswith("_created")]
