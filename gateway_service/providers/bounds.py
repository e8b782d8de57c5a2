"""What an upstream may send, capped on the bytes as they are read: a response hook on each SDK's client.

The SDKs read an event stream line by line and keep a line, and an event, until it ends; an error's body
they read whole. Nothing of theirs bounds either, so an upstream sending one endless line, or a 2 GiB body,
held that much memory, and the SDK's decoder, re-scanning its growing buffer on each read, held the event
loop for seconds. Here the body a response reads from (`response.stream`, the public
httpx2.AsyncByteStream that providers/http_spans.py wraps the same way) is wrapped so that:

- a streamed answer (2xx, an event stream) fails once a line passes `max_sse_line_bytes`, an event
  `max_sse_event_bytes`, or the whole response `max_response_bytes`, before the SDK sees those bytes;
- an error's body (3xx and up) is cut at `max_body_bytes`: the status still decides the failure kind, and
  the SDK parses (on the loop) at most that much JSON;
- a 2xx that is not an event stream (an HTML page, a JSON answer, an endless body) is refused at its head,
  named for what it is, rather than read to its end and reported as a truncated answer;
- a redirect to another origin is refused: the SDKs follow redirects, and a 307 re-sends the prompt;
- an event stream that is not UTF-8 fails (two SDKs raised on it, google-genai replaced the bytes);
- a compressed body is refused: the request asks for `identity` (`ask_identity`, a request hook), so the
  caps count the bytes the SDK reads, not the compressed ones a small gzip bomb would unfold from.

The hook serves httpx2 clients (openai, anthropic, google-genai) and cohere's httpx one alike: both libraries
share the API used here, and the wrapped bodies are byte streams of both (`AnyByteStream`).

A refusal is an httpx2 error (a DecodingError, or TooManyRedirects for the redirect), so each adapter's
`transport_failure` classifies it like any failure below the SDK: MALFORMED_RESPONSE (SERVER_ERROR for the
redirect), which fails over when nothing was sent yet. The scan costs a few `bytes.find` calls per chunk.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import httpx2

LINE_ENDS = (b"\n", b"\r")
EVENT_ENDS = (b"\n\n", b"\r\r", b"\n\r")  # a blank line, whichever line ends meet ("\r\n\r\n" holds "\n\r")
EVENT_STREAM = "text/event-stream"


# A response body of either library: httpx2 reads only an httpx2.AsyncByteStream, httpx an httpx.AsyncByteStream.
ASYNC_BYTE_STREAMS = (httpx2.AsyncByteStream, httpx.AsyncByteStream)


class UpstreamTooLarge(httpx2.DecodingError):
    """The upstream sent more than a cap allows."""


class NotAnEventStream(httpx2.DecodingError):
    """A successful response to a streaming request that is no event stream."""


class NotUtf8(httpx2.DecodingError):
    """An event stream with bytes that are not UTF-8."""


class CrossOriginRedirect(httpx2.TooManyRedirects):
    """A redirect away from the provider's origin, which would carry the prompt (and key) elsewhere."""


@dataclass(frozen=True)
class Caps:
    """The transport settings' caps, in bytes."""

    sse_line: int
    sse_event: int
    body: int
    response: int


class Bounds:
    """The response hook of one client."""

    def __init__(self, caps: Caps) -> None:
        self._caps = caps

    async def on_response(self, response: httpx2.Response) -> None:
        problem = head_problem(response)
        if problem:
            await response.aclose()
            error = CrossOriginRedirect if response.has_redirect_location else NotAnEventStream
            # (a compressed body is one too: its bytes are not the event stream the caps would count)
            raise error(f"{problem} from {response.url.host}", request=response.request)
        body = response.stream
        if not isinstance(body, ASYNC_BYTE_STREAMS):
            return  # a sync body never comes from an AsyncClient
        if response.is_success:
            response.stream = BoundedEvents(body, self._caps, response.request)
        else:
            response.stream = CutBody(body, self._caps.body)


async def ask_identity(request: httpx2.Request) -> None:
    """The request hook: no compressed answer (see the module doc)."""
    request.headers["accept-encoding"] = "identity"


def head_problem(response: httpx2.Response) -> str:
    """Why a response is refused on its head alone ("" when it is not)."""
    encoding = response.headers.get("content-encoding", "identity")
    if encoding.strip().lower() != "identity":
        return f"a {response.status_code} body with Content-Encoding {encoding[:40]!r}, though identity was asked"
    if response.has_redirect_location:
        target = response.request.url.join(response.headers["location"])
        origin = response.request.url
        if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
            return f"a {response.status_code} redirect to another origin ({target.scheme}://{target.host[:80]})"
        return ""
    content_type = response.headers.get("content-type", "")
    if response.is_success and content_type and not content_type.lower().lstrip().startswith(EVENT_STREAM):
        return f"a {response.status_code} {content_type[:60]!r} body where an event stream was expected"
    return ""


class _Wrapped(httpx2.AsyncByteStream, httpx.AsyncByteStream):
    def __init__(self, body: httpx2.AsyncByteStream) -> None:
        self._body = body

    @property
    def elapsed(self) -> timedelta | None:
        """The wrapped body's: `httpx2.Response.elapsed` reads it from `response.stream`."""
        elapsed: timedelta | None = getattr(self._body, "elapsed", None)
        return elapsed

    async def aclose(self) -> None:
        await self._body.aclose()


class CutBody(_Wrapped):
    """An error's body, ended after `limit` bytes (the connection is not reused: the response is closed)."""

    def __init__(self, body: httpx2.AsyncByteStream, limit: int) -> None:
        super().__init__(body)
        self._left = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                if len(chunk) >= self._left:
                    yield chunk[: self._left]
                    self._left = 0
                    return
                self._left -= len(chunk)
                yield chunk
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()


class BoundedEvents(_Wrapped):
    """An event stream that raises UpstreamTooLarge as soon as a line, an event or the whole passes its cap."""

    def __init__(self, body: httpx2.AsyncByteStream, caps: Caps, request: httpx2.Request) -> None:
        super().__init__(body)
        self._caps = caps
        self._request = request
        self._step = min(caps.sse_line, caps.sse_event)
        self._total = self._line = self._event = 0
        self._tail = b""  # the last bytes scanned, so an event's blank line split across chunks is seen
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                self._total += len(chunk)
                if self._total > self._caps.response:
                    self._refuse(f"a response over {self._caps.response} bytes (max_response_bytes)")
                for start in range(0, len(chunk), self._step):
                    self._scan(chunk[start : start + self._step] if len(chunk) > self._step else chunk)
                self._check_utf8(chunk)
                yield chunk
            self._check_utf8(b"", final=True)
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()

    def _scan(self, piece: bytes) -> None:
        """Track the open line and event over `piece`, at most one cap long, so only the carried part of a
        line or event can pass its cap: one inside the piece is shorter than the piece."""
        first, last = _first_last(piece, LINE_ENDS)
        if self._line + (len(piece) if first < 0 else first) > self._caps.sse_line:
            self._refuse(f"an event-stream line over {self._caps.sse_line} bytes (max_sse_line_bytes)")
        self._line = self._line + len(piece) if last < 0 else len(piece) - last - 1
        scanned = self._tail + piece
        first, last = _first_last(scanned, EVENT_ENDS, ends=True)
        if self._event + (len(piece) if first < 0 else max(0, first - len(self._tail))) > self._caps.sse_event:
            self._refuse(f"an event over {self._caps.sse_event} bytes (max_sse_event_bytes)")
        self._event = self._event + len(piece) if last < 0 else len(scanned) - last
        self._tail = scanned[-1:]

    def _check_utf8(self, chunk: bytes, final: bool = False) -> None:
        try:
            self._utf8.decode(chunk, final)
        except UnicodeDecodeError as exc:
            raise NotUtf8(f"an event stream that is not UTF-8 ({exc.reason})", request=self._request) from None

    def _refuse(self, what: str) -> None:
        raise UpstreamTooLarge(f"{what} from {self._request.url.host}", request=self._request)


def _first_last(data: bytes, marks: tuple[bytes, ...], *, ends: bool = False) -> tuple[int, int]:
    """The first and last position of any of `marks` in `data` (their end when `ends`), -1 when none."""
    firsts = [p + (len(m) if ends else 0) for m in marks if (p := data.find(m)) >= 0]
    if not firsts:
        return -1, -1
    lasts = [p + (len(m) if ends else 0) for m in marks if (p := data.rfind(m)) >= 0]
    return min(firsts), max(lasts)
