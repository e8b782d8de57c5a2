"""servicekit.tracing: off without an endpoint; log lines carry the current trace and span ids."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import tracing
from servicekit.logs import JsonFormatter


def test_off_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.ENDPOINT_ENV, raising=False)
    off = tracing.configure("svc")
    assert not off.enabled and off.server_interceptors() == [] and off.client_interceptors() == []
    monkeypatch.setenv(tracing.ENDPOINT_ENV, "http://127.0.0.1:1")
    on = tracing.configure("svc")
    try:
        assert on.enabled and len(on.server_interceptors()) == 1 and on.client_interceptors()
    finally:
        on.shutdown()


def test_log_lines_carry_trace_and_span_ids() -> None:
    exporter = InMemorySpanExporter()
    traced = tracing.configure("svc", exporter)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "inside", (), None)
    outside = json.loads(JsonFormatter().format(record))
    assert "trace_id" not in outside and "span_id" not in outside
    with traced.tracer("t").start_as_current_span("work") as span:
        line = json.loads(JsonFormatter().format(record))
    traced.shutdown()
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x") and line["span_id"] == format(context.span_id, "016x")
    assert [s.name for s in exporter.get_finished_spans()] == ["work"]
