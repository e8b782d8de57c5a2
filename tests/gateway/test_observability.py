"""What an operator sees: Prometheus families on both services after a chat that failed over and the
metric write it caused, and one trace per chat (server span, a GenAI span per attempt, the linked
metric write, and the schema service's span joined over gRPC)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway_service import server
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.metrics import Registry
from servicekit.procs import ServiceProcess, free_port
from servicekit.tracing import Tracing
from tests.gateway.e2e_helpers import Upstream, gateway_config, user
from tests.schemaserver import schema_server, settings_for

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-sim-7f3a9c-SECRET"  # both upstreams' API key: no span attribute may carry it
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def samples_of(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@asynccontextmanager
async def schema_service(dsn: str, tracing: Tracing) -> AsyncIterator[tuple[str, Registry]]:
    """The schema service as `serve` starts it (tests/schemaserver.py), traced into `tracing`."""
    async with schema_server(settings_for(dsn), tracing=tracing) as running:
        yield f"127.0.0.1:{running.port}", running.metrics


async def test_a_failover_shows_in_metrics_and_is_one_trace(sim: SimulatorHandle, migrated_db: str) -> None:
    schema_tracing, schema_spans = traced()
    gateway_tracing, gateway_spans = traced()
    async with schema_service(migrated_db, schema_tracing) as (address, schema_metrics):
        upstreams = [Upstream("p", "openai", "primary"), Upstream("f", "anthropic", "fallback", patient=True)]
        cfg = gateway_config(sim.base_url, upstreams, env={"SIM_KEY": KEY, "SCHEMA_SERVICE_ADDR": address})
        sim.simulator.clear()
        running = await server.start(cfg, server.ServeSettings(host="127.0.0.1", port=0), tracing=gateway_tracing)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                chat = chat_service_pb2_grpc.ChatServiceStub(channel)
                request = pb.StreamChatRequest(model="default", messages=user("hi [[fault:429 model=primary]]"))
                events = [e async for e in chat.StreamChat(request, timeout=10)]
            assert [e.WhichOneof("event") for e in events][-1] == "done"
            await running.gateway.telemetry.flush()
            gateway = samples_of(generate_latest(running.metrics.registry).decode())
        finally:
            await running.server.stop(0)
            await running.close()
        schema = samples_of(generate_latest(schema_metrics.registry).decode())

    stream_chat = {"grpc_service": "llmgateway.v1.ChatService", "grpc_method": "StreamChat"}
    assert value(gateway, "grpc_server_handled_total", **stream_chat, grpc_code="OK") == 1
    assert value(gateway, "grpc_server_handling_seconds_count", **stream_chat) == 1
    assert value(gateway, "llm_gateway_attempts_total", provider="p", outcome="rate_limited") == 1
    assert value(gateway, "llm_gateway_attempts_total", provider="f", outcome="ok") == 1
    assert value(gateway, "llm_gateway_failovers_total", provider="p", model="primary", reason="rate_limited") == 1
    assert value(gateway, "llm_gateway_time_to_first_token_seconds_count", provider="f") == 1
    assert value(gateway, "llm_gateway_attempt_duration_seconds_count") == 2
    assert value(gateway, "llm_gateway_tokens_total", provider="f", type="output") > 0
    assert value(gateway, "llm_gateway_cost_usd_total", provider="f") > 0
    assert value(gateway, "llm_gateway_streams_in_flight", method="StreamChat") == 0
    assert value(gateway, "llm_gateway_provider_health", provider="p", state="cooling_down") == 1
    assert value(gateway, "llm_gateway_provider_health", provider="f", state="healthy") == 1
    assert value(gateway, "llm_gateway_telemetry_sent_metrics_total") == running.gateway.telemetry.sent > 0
    assert value(gateway, "llm_gateway_telemetry_buffered_metrics") == 0
    assert not any(k == "request_id" or k == "user_id" for _, labels in gateway for k, _ in labels)

    sent = running.gateway.telemetry.sent
    assert value(schema, "schema_service_metrics_rows_total", method="WriteMetrics") == sent
    assert value(schema, "schema_service_metrics_batches_total", method="WriteMetrics", result="written") == 1
    assert value(schema, "schema_service_copy_seconds_count") == 1
    assert value(schema, "grpc_server_handled_total", grpc_method="WriteMetrics", grpc_code="OK") == 1
    assert value(schema, "schema_service_db_pool_connections") >= 1

    check_trace(gateway_spans.get_finished_spans(), schema_spans.get_finished_spans(), sim.port)


def check_trace(gateway: tuple[ReadableSpan, ...], schema: tuple[ReadableSpan, ...], sim_port: int) -> None:
    (root,) = [s for s in gateway if s.kind is SpanKind.SERVER]
    assert root.name.endswith("llmgateway.v1.ChatService/StreamChat")
    root_ctx = root.get_span_context()
    attempts = sorted((s for s in gateway if s.name.startswith("chat ")), key=lambda s: s.start_time or 0)
    assert [s.name for s in attempts] == ["chat primary", "chat fallback"]
    for span in attempts:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == root_ctx.span_id
        assert span.get_span_context().trace_id == root_ctx.trace_id
    failed, answered = (dict(s.attributes or {}) for s in attempts)
    assert failed["gen_ai.provider.name"] == "openai" and failed["gen_ai.request.model"] == "primary"
    assert failed["error.type"] == "rate_limited"
    assert answered["gen_ai.provider.name"] == "anthropic" and answered["gen_ai.operation.name"] == "chat"
    assert int(answered["gen_ai.usage.output_tokens"]) > 0 and int(answered["gen_ai.usage.input_tokens"]) > 0
    assert tuple(answered["gen_ai.response.finish_reasons"]) == ("stop",)

    # Under each attempt, the CLIENT span of its HTTP request (OTel HTTP conventions), ended with its body.
    http = [s for s in gateway if (s.attributes or {}).get("http.request.method")]
    assert len(http) == 2
    for attempt, status in zip(attempts, (429, 200), strict=True):
        parent_id = attempt.get_span_context().span_id
        (request,) = [s for s in http if s.parent is not None and s.parent.span_id == parent_id]
        attributes = dict(request.attributes or {})
        assert request.name == "POST" and request.kind is SpanKind.CLIENT
        assert attributes["http.response.status_code"] == status
        assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == sim_port
        assert str(attributes["url.full"]).startswith(f"http://127.0.0.1:{sim_port}/")
        assert (request.start_time or 0) >= (attempt.start_time or 0)
        assert (request.end_time or 0) <= (attempt.end_time or 0)
        assert attributes.get("error.type") == ("429" if status == 429 else None)
    assert not [(s.name, k) for s in gateway for k, v in (s.attributes or {}).items() if KEY in str(v)]

    # The metric write serves many chats: its span links to this one, and carries its context to the schema service.
    (send,) = [s for s in gateway if s.name == "send metrics"]
    assert root_ctx.trace_id in {link.context.trace_id for link in send.links}
    (write,) = [s for s in gateway if s.kind is SpanKind.CLIENT and s.name.endswith("WriteMetrics")]
    assert write.parent is not None and write.parent.span_id == send.get_span_context().span_id
    (received,) = [s for s in schema if s.kind is SpanKind.SERVER and s.name.endswith("WriteMetrics")]
    assert received.get_span_context().trace_id == write.get_span_context().trace_id
    assert received.parent is not None and received.parent.span_id == write.get_span_context().span_id


@pytest.fixture
def gateway_yaml(tmp_path: Path, sim: SimulatorHandle) -> Iterator[Path]:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""
providers:
  - name: p
    type: openai
    base_url: {sim.base_url}/v1
    no_api_key: true
    models: [{{name: m}}]
routes: {{default: [p/m]}}
"""
    )
    yield path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


async def test_both_services_serve_metrics_over_http_and_the_dashboards_use_only_what_they_serve(
    gateway_yaml: Path, migrated_db: str
) -> None:
    gateway_port, schema_port = free_port(), free_port()
    with (
        ServiceProcess("gateway-service", "--config", str(gateway_yaml), "--metrics-port", str(gateway_port)) as gw,
        ServiceProcess(
            "schema-service", "--database-url", migrated_db, "--metrics-port", str(schema_port), "--no-migrate"
        ) as schema,
    ):
        await gw.wait_serving()
        await schema.wait_serving()
        async with grpc.aio.insecure_channel(gw.address) as channel:
            chat = chat_service_pb2_grpc.ChatServiceStub(channel)
            await chat.Chat(pb.ChatRequest(model="default", messages=user("hi")), timeout=10)
        texts = (scrape(gateway_port), scrape(schema_port))
    served = {family.name for text in texts for family in text_string_to_metric_families(text)}
    assert {"llm_gateway_attempts", "llm_gateway_provider_health", "grpc_server_handled"} <= served
    assert {"schema_service_migration_version", "schema_service_db_pool_connections"} <= served

    generator = [sys.executable, str(ROOT / "scripts" / "gen_dashboards.py"), "--check"]
    check = subprocess.run(generator, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr.decode()
    # Every family is declared at start-up (labelled ones with no samples yet), so what a dashboard
    # queries must be served now, whatever has happened so far.
    dashboards = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "dashboards"
    boards = list(dashboards.glob("*.json"))
    assert len(boards) == 2
    for board in boards:
        for name in set(re.findall(r"\b((?:llm_gateway|schema_service|grpc_server)_[a-z_]+)", board.read_text())):
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert family in served, f"{board.name} queries {name}, which neither service serves"
