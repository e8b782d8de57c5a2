"""Pieces of failure mapping shared by every adapter.

Each adapter owns one `classify` table for its SDK's exception classes; what is
common to all of them lives here: the transport exceptions the SDKs let through
(httpx and its fork httpx2, which the SDKs use today), Retry-After headers,
HTTP status codes, and building a scrubbed ProviderError.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
import httpx2
import pydantic

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.scrub import scrub

# Order matters: the first matching class wins, so subclasses come before their bases.
_TRANSPORT_KINDS: tuple[tuple[type[BaseException], FailureKind], ...] = (
    (httpx.TimeoutException, FailureKind.TIMEOUT),
    (httpx2.TimeoutException, FailureKind.TIMEOUT),
    (httpx.DecodingError, FailureKind.MALFORMED_RESPONSE),
    (httpx2.DecodingError, FailureKind.MALFORMED_RESPONSE),
    (httpx.TransportError, FailureKind.CONNECTION_ERROR),
    (httpx2.TransportError, FailureKind.CONNECTION_ERROR),
    (httpx.TooManyRedirects, FailureKind.SERVER_ERROR),
    (httpx2.TooManyRedirects, FailureKind.SERVER_ERROR),
    (httpx.StreamError, FailureKind.CONNECTION_ERROR),
    (httpx2.StreamError, FailureKind.CONNECTION_ERROR),
    (httpx.InvalidURL, FailureKind.CONNECTION_ERROR),
    (httpx2.InvalidURL, FailureKind.CONNECTION_ERROR),
    (ssl.SSLError, FailureKind.CONNECTION_ERROR),
    (anyio.EndOfStream, FailureKind.CONNECTION_ERROR),
    (anyio.BrokenResourceError, FailureKind.CONNECTION_ERROR),
    (TimeoutError, FailureKind.TIMEOUT),
    (ConnectionError, FailureKind.CONNECTION_ERROR),
    (json.JSONDecodeError, FailureKind.MALFORMED_RESPONSE),
    (pydantic.ValidationError, FailureKind.MALFORMED_RESPONSE),
    (UnicodeDecodeError, FailureKind.MALFORMED_RESPONSE),
)


def classify_transport(exc: BaseException) -> FailureKind | None:
    """Kind of a transport or decoding exception below the SDK, or None if it is not one."""
    if isinstance(exc, httpx.HTTPStatusError | httpx2.HTTPStatusError):
        return kind_for_status(exc.response.status_code)
    for cls, kind in _TRANSPORT_KINDS:
        if isinstance(exc, cls):
            return kind
    return None


def nearest_kind(exc: BaseException, table: Mapping[type[BaseException], FailureKind | None]) -> FailureKind | None:
    """The kind of the nearest class of `exc` in an adapter's table; KeyError for an unlisted class,
    so that a new SDK exception class fails the table test instead of slipping through."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    raise KeyError(type(exc))


def kind_for_status(status: int) -> FailureKind:
    """The kind an HTTP status means when the body says nothing more specific."""
    if status in (401, 403):
        return FailureKind.AUTH_FAILED
    if status == 404:
        # The model or endpoint does not exist at this provider: a configuration problem, so the
        # provider is flagged like an auth failure and the next candidate is tried.
        return FailureKind.AUTH_FAILED
    if status in (408, 504):
        return FailureKind.TIMEOUT
    if status == 413:
        return FailureKind.CONTEXT_TOO_LONG
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (503, 529):
        return FailureKind.OVERLOADED
    if status in (409, 425) or status >= 500:
        return FailureKind.SERVER_ERROR
    if 400 <= status < 500:
        return FailureKind.INVALID_REQUEST
    return FailureKind.SERVER_ERROR


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def body_error(body: object) -> Mapping[str, Any]:
    """The `error` object of a provider error body (or the body itself when it is the error)."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        return inner if isinstance(inner, Mapping) else body
    return {}


def make_error(
    kind: FailureKind,
    message: str,
    *,
    secrets: tuple[str | None, ...] = (),
    status_code: int | None = None,
    retry_after: float | None = None,
    request_id: str = "",
) -> ProviderError:
    """A ProviderError whose message is scrubbed and bounded."""
    text = scrub(message, secrets)[:1000]
    return ProviderError(
        kind, text, status_code=status_code, retry_after_s=retry_after, upstream_request_id=request_id
    )
