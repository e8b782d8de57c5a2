"""Pieces of failure mapping shared by every adapter.

Each adapter owns one `classify` table for its SDK's exception classes; what is
common to all of them lives here: what failed below the SDK (`transport_failure`, which every
adapter's `map_error` asks first), Retry-After headers, HTTP status codes, and building a scrubbed
ProviderError.

Below the SDKs sit httpx2 (the SDKs' client) and, on the default stack, aiohttp. The SDKs wrap a
transport failure in their own APIConnectionError / APITimeoutError, and the aiohttp wrapper maps
aiohttp's exceptions to httpx2's, not always rightly (a refused connection leaves it as
httpx2.ConnectTimeout). So the failure is read from the exception chain through `__cause__` /
`__context__`: aiohttp's exception when there is one, else httpx2's (or httpx's), and the OS error
under them names what happened: refused, DNS, an untrusted certificate.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import aiohttp.client_exceptions as aiohttp_client
import aiohttp.http_exceptions as aiohttp_http
import anyio
import httpx
import httpx2
import pydantic

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.providers.scrub import scrub

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


K = FailureKind
# Every exception class aiohttp's client raises (the table test walks ClientError's and
# HttpProcessingError's subclass trees, so a class a newer aiohttp adds fails it until classified).
AIOHTTP_KINDS: dict[type[BaseException], FailureKind] = {
    aiohttp.ClientError: K.CONNECTION_ERROR,
    # aiohttp raises this for a response head it could not parse; its `status` is aiohttp's, not the upstream's.
    aiohttp.ClientResponseError: K.CONNECTION_ERROR,
    aiohttp.ContentTypeError: K.MALFORMED_RESPONSE,
    aiohttp.WSServerHandshakeError: K.CONNECTION_ERROR,
    aiohttp.ClientHttpProxyError: K.CONNECTION_ERROR,
    aiohttp.TooManyRedirects: K.SERVER_ERROR,
    aiohttp.ClientConnectionError: K.CONNECTION_ERROR,
    aiohttp.ClientConnectionResetError: K.CONNECTION_ERROR,
    aiohttp.ClientOSError: K.CONNECTION_ERROR,
    aiohttp.ClientConnectorError: K.CONNECTION_ERROR,  # refused, unreachable: the wrapper calls it ConnectTimeout
    aiohttp.ClientConnectorDNSError: K.CONNECTION_ERROR,
    aiohttp.ClientProxyConnectionError: K.CONNECTION_ERROR,
    aiohttp_client.UnixClientConnectorError: K.CONNECTION_ERROR,  # not re-exported by aiohttp itself
    aiohttp.ClientSSLError: K.CONNECTION_ERROR,
    aiohttp.ClientConnectorSSLError: K.CONNECTION_ERROR,
    aiohttp.ClientConnectorCertificateError: K.CONNECTION_ERROR,
    aiohttp.ServerConnectionError: K.CONNECTION_ERROR,
    aiohttp.ServerDisconnectedError: K.CONNECTION_ERROR,
    aiohttp.ServerFingerprintMismatch: K.CONNECTION_ERROR,
    aiohttp.ServerTimeoutError: K.TIMEOUT,
    aiohttp.ConnectionTimeoutError: K.TIMEOUT,
    aiohttp.SocketTimeoutError: K.TIMEOUT,
    aiohttp.ClientPayloadError: K.CONNECTION_ERROR,  # the body broke off or was mis-framed
    aiohttp.UploadAbortedError: K.CONNECTION_ERROR,
    aiohttp.InvalidURL: K.CONNECTION_ERROR,  # a base_url aiohttp cannot use: as httpx's InvalidURL
    aiohttp.InvalidUrlClientError: K.CONNECTION_ERROR,
    aiohttp.NonHttpUrlClientError: K.CONNECTION_ERROR,
    aiohttp.RedirectClientError: K.SERVER_ERROR,  # the upstream redirected somewhere unusable
    aiohttp.InvalidUrlRedirectClientError: K.SERVER_ERROR,
    aiohttp.NonHttpUrlRedirectClientError: K.SERVER_ERROR,
    # The parser's own errors, which reach the caller as the cause of the above or, rarely, bare.
    aiohttp_http.HttpProcessingError: K.CONNECTION_ERROR,
    aiohttp_http.BadHttpMessage: K.CONNECTION_ERROR,
    aiohttp_http.HttpBadRequest: K.CONNECTION_ERROR,
    aiohttp_http.PayloadEncodingError: K.CONNECTION_ERROR,
    aiohttp_http.TransferEncodingError: K.CONNECTION_ERROR,
    aiohttp_http.ContentLengthError: K.CONNECTION_ERROR,
    aiohttp_http.ContentEncodingError: K.MALFORMED_RESPONSE,
    aiohttp_http.DecompressSizeError: K.MALFORMED_RESPONSE,
    aiohttp_http.LineTooLong: K.CONNECTION_ERROR,
    aiohttp_http.InvalidHeader: K.CONNECTION_ERROR,
    aiohttp_http.BadStatusLine: K.CONNECTION_ERROR,
    aiohttp_http.BadHttpMethod: K.CONNECTION_ERROR,
    aiohttp_http.InvalidURLError: K.CONNECTION_ERROR,
}
_AIOHTTP_ROOTS = (aiohttp.ClientError, aiohttp_http.HttpProcessingError)
_HTTPX_ROOTS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    httpx2.HTTPError,
    httpx2.InvalidURL,
    httpx2.StreamError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it, outermost first: explicit causes, else the implicit context, else an
    exception carried as the first argument (httpcore2 wraps the OS error that way) or the first of a group."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        following = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        if following is None and isinstance(current, BaseExceptionGroup) and current.exceptions:
            following = current.exceptions[0]
        if following is None and current.args and isinstance(current.args[0], BaseException):
            following = current.args[0]
        current = following


def transport_failure(exc: BaseException, secrets: tuple[str | None, ...] = ()) -> ProviderError | None:
    """The failure below the SDK that `exc` carries (itself or down its chain), or None if it carries none.

    aiohttp's own exception decides when there is one (the wrapper's httpx2 name for it may be wrong),
    else httpx2's; the OS error under them makes the message say what happened and to which host.
    """
    chain = list(_chain(exc))
    decider: BaseException | None = next((e for e in chain if isinstance(e, _AIOHTTP_ROOTS)), None)
    kind: FailureKind | None
    if decider is not None:
        kind = nearest_kind(decider, AIOHTTP_KINDS)
    else:
        decider = next((e for e in chain if isinstance(e, _HTTPX_ROOTS)), None)
        if decider is None:
            return None
        kind = classify_transport(decider)
    return make_error(kind or K.CONNECTION_ERROR, _describe(decider, chain), secrets=secrets)


def _describe(decider: BaseException, chain: list[BaseException]) -> str:
    host = _host(chain)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause)
            return f"TLS: the certificate of {host} is not trusted ({detail})"
        if isinstance(cause, socket.gaierror):
            return f"DNS: cannot resolve {host} ({cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {host}"
    try:
        text = str(decider)
    except Exception:  # aiohttp's response errors format request details that may be missing
        text = ""
    text = text or type(decider).__name__
    return f"{type(decider).__name__}: {text}" + ("" if host in text else f" ({host})")


def _host(chain: list[BaseException]) -> str:
    """host:port of the upstream: from aiohttp's connection error, else from the request an exception carries."""
    for cause in chain:
        if isinstance(cause, aiohttp.ClientConnectorError):
            return f"{cause.host}:{cause.port}"
    for cause in chain:
        try:
            request = getattr(cause, "request", None)  # the SDKs' errors and httpx2's (which raises when unset)
        except RuntimeError:
            continue
        if isinstance(request, httpx2.Request | httpx.Request):
            url = request.url
            return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    return "the upstream"


def classify_transport(exc: BaseException) -> FailureKind | None:
    """Kind of a transport or decoding exception below the SDK, or None if it is not one."""
    if isinstance(exc, httpx.HTTPStatusError | httpx2.HTTPStatusError):
        return kind_for_status(exc.response.status_code)
    for cls, kind in _TRANSPORT_KINDS:
        if isinstance(exc, cls):
            return kind
    return None


def nearest_kind(exc: BaseException, table: Mapping[type[BaseException], FailureKind | None]) -> FailureKind | None:
    """The kind of the nearest class of `exc` in a table; KeyError for an unlisted class,
    so that a new exception class fails the table test instead of slipping through."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    raise KeyError(type(exc))


def nearest_named_kind(exc: BaseException, table: Mapping[str, FailureKind | None]) -> FailureKind | None:
    """`nearest_kind` for an SDK table keyed by class name (SDKs keep some classes in private modules)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    raise KeyError(type(exc))


def other_error(exc: BaseException, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """Neither the SDK's exception nor a transport's: decoding errors and the like, else a malformed response."""
    kind = classify_transport(exc) or FailureKind.MALFORMED_RESPONSE
    return make_error(kind, f"{type(exc).__name__}: {exc}", secrets=secrets)


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
    return ProviderError(kind, text, status_code=status_code, retry_after_s=retry_after, upstream_request_id=request_id)
