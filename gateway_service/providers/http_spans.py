"""One OpenTelemetry CLIENT span per provider HTTP request, from the httpx2 client's event hooks.

The span follows the OTel HTTP client conventions: named for the method (`POST`), with
`http.request.method`, `server.address`, `server.port`, `url.full` (user, password and every query
value replaced by REDACTED; no header is ever recorded, so no API key is), `network.protocol.version`,
`http.response.status_code`, and `error.type` on failure (the status code from 400 up, the exception's
class when reading the body fails, or the attempt's failure kind when no response came). It is the
child of the span current when the SDK sends the request: the attempt's GenAI span (chat/spans.py).

It ends when the response is finished, not at its head: the response hook wraps `response.stream`
(the public httpx2.AsyncByteStream a response reads its body from, which httpx2 itself wraps the same
way to time it), and the span ends when that body has been read to its end, fails, or is closed (the
SDK done with it, or the attempt closing it early: failover, a timeout, the caller gone).

httpx2 has no hook for a request that gets no response (refused connection, TLS failure, a timeout or a
cancellation before the head), so the request hook leaves its span in `_unanswered`, a ContextVar: the
request is sent, and fails, in the task that opens the attempt, where `drive()` calls `end_unanswered`
with the attempt's failure kind. The response hook takes the span from there, so the var also pairs a
response with its request without touching the request.

Why hooks rather than a maintained instrumentation: opentelemetry-instrumentation-httpx patches `httpx`'s
transport classes (not httpx2's), or for one client wraps its private `_transport` and `_mounts`, and
either way ends the span when the transport returns the response head. Passing a wrapping transport as
`transport=` instead turns off httpx2's proxies from the environment and replaces the aiohttp transport
the SDKs build themselves; aiohttp's TraceConfig needs a ClientSession of our own for the same reason,
and covers one stack of the two. Event hooks are public on every httpx2 client, whatever transport is
under it. With tracing off no hook is installed (providers/http.py).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta

import httpx
import httpx2
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

REDACTED = "REDACTED"
DEFAULT_PORTS = {"http": 80, "https": 443}
METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})

_unanswered: contextvars.ContextVar[Span | None] = contextvars.ContextVar("http_span_unanswered", default=None)


class HttpSpans:
    """The request and response hooks that trace one client's requests."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    async def on_request(self, request: httpx2.Request) -> None:
        url = request.url
        method = request.method if request.method in METHODS else "_OTHER"
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "server.address": url.host,
            "server.port": url.port or DEFAULT_PORTS.get(url.scheme, 0),
            "url.full": redacted_url(url),
        }
        span = self._tracer.start_span(
            "HTTP" if method == "_OTHER" else method, kind=SpanKind.CLIENT, attributes=attributes
        )
        _unanswered.set(span)

    async def on_response(self, response: httpx2.Response) -> None:
        span = _unanswered.get()
        if span is None:
            return
        _unanswered.set(None)
        span.set_attribute("http.response.status_code", response.status_code)
        span.set_attribute("network.protocol.version", response.http_version.removeprefix("HTTP/"))
        if response.status_code >= 400:
            span.set_attribute("error.type", str(response.status_code))
            span.set_status(Status(StatusCode.ERROR))
        if isinstance(response.stream, httpx2.AsyncByteStream | httpx.AsyncByteStream):  # cohere's client is httpx
            response.stream = SpanEndingBody(response.stream, span)
        else:  # a sync body never comes from an AsyncClient; end rather than leak the span
            span.end()


def end_unanswered(error_type: str) -> None:
    """End the span of a request sent in this task that got no response (a no-op when there is none)."""
    span = _unanswered.get()
    if span is None:
        return
    _unanswered.set(None)
    span.set_attribute("error.type", error_type)
    if error_type != "cancelled":  # as the attempt span: the caller leaving is not the upstream failing
        span.set_status(Status(StatusCode.ERROR))
    span.end()


class SpanEndingBody(httpx2.AsyncByteStream, httpx.AsyncByteStream):
    """A response body that ends its request's span once read to the end, failed, or closed."""

    def __init__(self, body: httpx2.AsyncByteStream, span: Span) -> None:
        self._body = body
        self._span: Span | None = span

    @property
    def elapsed(self) -> timedelta | None:
        """The wrapped body's: `httpx2.Response.elapsed` (and the SDKs' `elapsed`) read it from `response.stream`."""
        elapsed: timedelta | None = getattr(self._body, "elapsed", None)
        return elapsed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as exc:
            self._end(type(exc).__qualname__)
            raise
        else:
            self._end()
        finally:
            # Close a body read in part in the task that read it, as httpx2's own wrapper does, rather than
            # leave it to the event loop's generator finaliser.
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    async def aclose(self) -> None:
        self._end()
        await self._body.aclose()

    def __del__(self) -> None:
        # Every path in the gateway closes its responses; should one ever be dropped unclosed, its span is
        # still exported (late) rather than lost.
        self._end()

    def _end(self, error_type: str | None = None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def redacted_url(url: httpx2.URL) -> str:
    """`url.full` with nothing secret in it: the user, the password and every query value are REDACTED."""
    if url.userinfo:
        url = url.copy_with(username=REDACTED, password=REDACTED)
    if url.query:
        url = url.copy_with(params=[(name, REDACTED) for name, _ in url.params.multi_items()])
    return str(url)
