"""The adapter interface every provider implements, and the failure taxonomy it raises.

An adapter turns a ChatRequest into its SDK's call and the SDK's stream into
ProviderEvents. Every exception its SDK (or the transport below it) can raise is
translated in one place in the adapter into ProviderError; nothing else escapes.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from gateway_service.chat.request import ChatRequest, ProviderEvent


class FailureKind(enum.Enum):
    """Why an attempt failed; decides what failover does next."""

    RATE_LIMITED = "rate_limited"  # 429: next candidate, cooldown from Retry-After
    OVERLOADED = "overloaded"  # Anthropic 529, 503: next
    SERVER_ERROR = "server_error"  # other 5xx: next
    CONNECTION_ERROR = "connection_error"  # refused, reset, TLS: next
    TIMEOUT = "timeout"  # connect, first token, idle: next
    AUTH_FAILED = "auth_failed"  # 401/403: next, provider flagged misconfigured
    QUOTA_EXHAUSTED = "quota_exhausted"  # OpenAI insufficient_quota: next, long cooldown, flagged
    INVALID_REQUEST = "invalid_request"  # 400: no failover, INVALID_ARGUMENT
    CONTEXT_TOO_LONG = "context_too_long"  # only larger context windows, else OUT_OF_RANGE
    CONTENT_FILTERED = "content_filtered"  # done with finish reason content_filter
    MALFORMED_RESPONSE = "malformed_response"  # unparseable chunk: next
    TRUNCATED = "truncated"  # stream ended without a finish reason: next


@dataclass(frozen=True)
class ProviderConfig:
    """What an adapter needs to reach one upstream."""

    name: str
    type: str  # openai | gemini | anthropic | openai_compatible
    base_url: str | None
    api_key: str | None
    api_version: str | None = None
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    timeout_s: float = 60.0
    http_client: str = "gateway"  # gateway | httpx (see providers/transport.py)
    # Models configured `reasoning: effort`: asked for a thinking level instead of a token budget.
    effort_models: frozenset[str] = frozenset()


class ProviderError(Exception):
    """A failed attempt, classified. `message` is already scrubbed of secrets."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        upstream_request_id: str = "",
        field: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.upstream_request_id = upstream_request_id
        self.field = field  # the request field at fault, when the gateway refused the request itself

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value}, {self.message!r}, status={self.status_code})"


class Unsupported(ValueError):
    """A request a provider's format cannot express, refused before sending; names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ProviderAdapter(Protocol):
    """One wire format. `stream` yields events and raises only ProviderError."""

    config: ProviderConfig

    def stream(self, request: ChatRequest, model: str, *, deadline_s: float) -> AsyncGenerator[ProviderEvent, None]:
        """Open the upstream stream for `model`; closing the iterator closes the HTTP request.

        `deadline_s` is the number of seconds this attempt may take from now (the attempt's share of
        the caller's deadline); the attempt also ends by `config.timeout_s`. `aclose()` on the
        returned generator, or cancelling the task iterating it, closes the HTTP response at once.
        """
        ...

    async def aclose(self) -> None:
        """Release the SDK client and its connections."""
        ...
