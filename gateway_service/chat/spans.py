"""One OpenTelemetry span per attempt, named and attributed by the GenAI semantic conventions.

The span is a CLIENT span `chat {model}` under the call's server span. It is current while the
attempt opens, so the read task that sends the HTTP request (created in `Attempt.open`) carries
it in its context; it ends when the attempt's record is made, with the usage and finish reason,
or with `error.type` set to the failure's kind (the reason the gateway failed over).
With tracing off the tracer is a no-op tracer: a few attribute-less calls per attempt.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway_service.domain.events import AttemptRecord
from gateway_service.domain.request import ChatRequest

# Wire formats as the GenAI conventions name providers (gen_ai.provider.name).
PROVIDER_NAMES = {
    "openai": "openai",
    "openai_compatible": "openai",
    "groq": "groq",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "cohere": "cohere",
}


def start(tracer: trace.Tracer, provider_type: str, provider: str, model: str, request: ChatRequest) -> Span:
    attributes: dict[str, str | int | float] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAMES.get(provider_type, provider_type),
        "gen_ai.request.model": model,
        "llm_gateway.provider": provider,  # the configured entry (several may share a wire format)
    }
    if request.sampling.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.sampling.temperature
    if request.max_output_tokens:
        attributes["gen_ai.request.max_tokens"] = request.max_output_tokens
    return tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)


def end(span: Span, record: AttemptRecord, finish_reason: str | None) -> None:
    if record.usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", record.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", record.usage.output_tokens)
    if finish_reason is not None:
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    if record.outcome is not None:
        span.set_attribute("error.type", record.outcome.value)
        span.set_status(Status(StatusCode.ERROR, record.message[:200]))
    elif record.message == "cancelled":
        span.set_attribute("error.type", "cancelled")
    span.end()
