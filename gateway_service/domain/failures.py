"""The failure taxonomy every provider adapter raises and the pipeline decides on.

FailureKind      why an attempt failed; decides what failover does next
ProviderError    a failed attempt, classified (the only exception an adapter's stream raises)
Unsupported      a request a provider's format cannot express, refused before sending
"""

from __future__ import annotations

import enum


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
