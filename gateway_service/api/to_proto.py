"""Pipeline events -> proto messages: the stream's events, Chat's attempts and skipped candidates."""

from __future__ import annotations

from gateway_service.domain import request as domain
from gateway_service.domain.events import (
    AttemptRecord,
    AttemptStarted,
    AttemptUsage,
    FailedOver,
    GatewayEvent,
    OutputDelta,
    SkipReason,
)
from gateway_service.domain.failures import FailureKind
from llmgateway.v1 import chat_service_pb2 as pb

POLICY = {
    "priority": pb.ROUTING_POLICY_PRIORITY,
    "weighted": pb.ROUTING_POLICY_WEIGHTED,
    "lowest_latency": pb.ROUTING_POLICY_LOWEST_LATENCY,
    "lowest_cost": pb.ROUTING_POLICY_LOWEST_COST,
    "least_busy": pb.ROUTING_POLICY_LEAST_BUSY,
    "caller_order": pb.ROUTING_POLICY_CALLER_ORDER,
}
FINISH = {
    domain.FinishReason.STOP: pb.FINISH_REASON_STOP,
    domain.FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    domain.FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    domain.FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
}
REASONS: dict[FailureKind | SkipReason, pb.FailureReason] = {
    FailureKind.RATE_LIMITED: pb.FAILURE_REASON_RATE_LIMITED,
    FailureKind.OVERLOADED: pb.FAILURE_REASON_OVERLOADED,
    FailureKind.SERVER_ERROR: pb.FAILURE_REASON_SERVER_ERROR,
    FailureKind.CONNECTION_ERROR: pb.FAILURE_REASON_CONNECTION_ERROR,
    FailureKind.TIMEOUT: pb.FAILURE_REASON_TIMEOUT,
    FailureKind.AUTH_FAILED: pb.FAILURE_REASON_AUTH_FAILED,
    FailureKind.QUOTA_EXHAUSTED: pb.FAILURE_REASON_QUOTA_EXHAUSTED,
    FailureKind.INVALID_REQUEST: pb.FAILURE_REASON_INVALID_REQUEST,
    FailureKind.CONTEXT_TOO_LONG: pb.FAILURE_REASON_CONTEXT_TOO_LONG,
    FailureKind.CONTENT_FILTERED: pb.FAILURE_REASON_UNSPECIFIED,
    FailureKind.MALFORMED_RESPONSE: pb.FAILURE_REASON_MALFORMED_RESPONSE,
    FailureKind.TRUNCATED: pb.FAILURE_REASON_TRUNCATED,
    SkipReason.NOT_CONFIGURED: pb.FAILURE_REASON_NOT_CONFIGURED,
    SkipReason.UNHEALTHY: pb.FAILURE_REASON_UNHEALTHY,
    SkipReason.CONTEXT_TOO_SMALL: pb.FAILURE_REASON_CONTEXT_TOO_LONG,
    SkipReason.NO_PREFILL: pb.FAILURE_REASON_PREFILL_UNSUPPORTED,
    SkipReason.DEADLINE: pb.FAILURE_REASON_DEADLINE_TOO_SHORT,
    SkipReason.BUDGET_EXHAUSTED: pb.FAILURE_REASON_BUDGET_EXHAUSTED,
    SkipReason.PREDICTED_RATE_LIMIT: pb.FAILURE_REASON_PREDICTED_RATE_LIMIT,
    SkipReason.UNSUPPORTED_CONTENT: pb.FAILURE_REASON_UNSUPPORTED_CONTENT,
}


def stream_event(event: GatewayEvent) -> pb.StreamChatResponse:
    """One StreamChatResponse for one pipeline event."""
    if isinstance(event, OutputDelta):
        return pb.StreamChatResponse(delta=delta(event))
    if isinstance(event, AttemptStarted):
        response = pb.StreamChatResponse(
            started=pb.Started(
                provider=event.provider,
                model=event.model,
                attempt=event.attempt,
                policy=POLICY.get(event.policy, pb.ROUTING_POLICY_UNSPECIFIED),
                score=event.score,
                hedge=event.hedge,
            )
        )
        if event.skipped:
            response.started.skipped.extend(skipped(r) for r in event.skipped)
        return response
    if isinstance(event, FailedOver):
        return pb.StreamChatResponse(
            failover=pb.Failover(
                from_provider=event.from_provider,
                from_model=event.from_model,
                to_provider=event.to_provider,
                to_model=event.to_model,
                reason=REASONS[event.reason],
                message=event.message,
                discard_output=event.discard_output,
                attempt=event.attempt,
            )
        )
    if isinstance(event, AttemptUsage):
        return pb.StreamChatResponse(usage=usage(event))
    return pb.StreamChatResponse(
        done=pb.Done(
            finish_reason=FINISH[event.finish_reason],
            provider=event.provider,
            model=event.model,
            attempts=event.attempts,
            upstream_request_id=event.upstream_request_id,
            request_id=event.request_id,
            usage=usage(event.usage) if event.usage is not None else None,
            hedge_won=event.hedge_won,
        )
    )


def delta(event: OutputDelta) -> pb.Delta:
    piece = event.piece
    if isinstance(piece, domain.TextDelta):
        return pb.Delta(sequence=event.sequence, text=piece.text)
    if isinstance(piece, domain.ReasoningDelta):
        return pb.Delta(sequence=event.sequence, reasoning_text=piece.text, reasoning_signature=piece.signature)
    call = pb.ToolCallDelta(index=piece.index, id=piece.id, name=piece.name, arguments_json=piece.arguments_json)
    return pb.Delta(sequence=event.sequence, tool_call=call)


def usage(event: AttemptUsage) -> pb.Usage:
    return pb.Usage(
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cost_usd=float(event.cost_usd),
        provider=event.provider,
        model=event.model,
        attempt=event.attempt,
        reasoning_tokens=event.reasoning_tokens,
        cached_input_tokens=event.cached_input_tokens,
        cache_write_tokens=event.cache_write_tokens,
        cost=format(event.cost_usd, "f"),
        estimated=event.estimated,
    )


def attempt(record: AttemptRecord) -> pb.Attempt:
    message = pb.Attempt(
        attempt=record.attempt,
        provider=record.provider,
        model=record.model,
        failure_reason=REASONS[record.outcome] if record.outcome else pb.FAILURE_REASON_UNSPECIFIED,
        message=record.message,
    )
    message.duration.FromNanoseconds(int(record.duration_s * 1e9))
    if record.usage is not None:
        message.usage.CopyFrom(usage(record.usage))
    return message


def skipped(record: AttemptRecord) -> pb.Skipped:
    """A candidate passed over without a request; its message is the gateway's own text, never upstream's."""
    outcome = record.outcome
    # A cooldown's outcome is the failure that started it; no request failed in this call, so it is UNHEALTHY.
    reason = REASONS[outcome] if isinstance(outcome, SkipReason) else pb.FAILURE_REASON_UNHEALTHY
    message = pb.Skipped(provider=record.provider, model=record.model, reason=reason, message=record.message)
    if record.retry_after_s is not None:
        message.retry_after.FromNanoseconds(int(record.retry_after_s * 1e9))
    return message
