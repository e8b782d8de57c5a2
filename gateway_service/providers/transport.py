"""A lean HTTP/1.1 transport for the SDKs' httpx2 clients (`http_client: gateway`, the default).

The SDKs stay in charge of requests, responses, SSE parsing and their errors; this only
replaces httpcore2 + h11 + anyio underneath them, which cost about 0.6 ms of CPU per request
on a 2-vCPU machine against 0.1 ms for the round trip itself. It writes the head and the
body in one send, parses the response head itself and reads the body straight off an
asyncio stream. Failures are raised as the httpx2 exceptions httpcore2 would raise, so the
SDKs (and the adapters' error tables) see the same classes either way.

Kept deliberately small: HTTP/1.1 over TCP or TLS, keep-alive per origin, no HTTP/2. httpx2
still handles redirects, auth, cookies and decoding above it, and proxies from the
environment go through httpx2's own proxy transports (see `http_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
from httpx2._utils import get_environment_proxies  # what httpx2 itself reads; not re-exported

from gateway_service.providers.base import ProviderConfig

_HEAD_LIMIT = 1 << 20  # a response head (or chunk-size line) longer than this is a protocol error
_READ_SIZE = 1 << 16
Origin = tuple[str, str, int]
Head = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, reason phrase, headers


class _Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        # An idle connection the server closed has EOF (or an error) pending on its reader.
        return not self.writer.is_closing() and not self.reader.at_eof() and self.reader.exception() is None

    def close(self) -> None:
        # Not awaited: the FIN goes out now, which is what tells the upstream the client left.
        self.writer.close()


class GatewayTransport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive: up to `max_idle` idle connections per origin, each for `keepalive_expiry` s.

    The expiry (httpx's default, 5 s) is for what cannot be seen from here: a NAT or load balancer that
    forgets an idle connection without a FIN, so the next request on it would wait for a timeout.
    """

    def __init__(
        self, *, max_idle: int = 64, keepalive_expiry: float = 5.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        conn = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            body = await request.aread()
            await _send(conn, _head(request, len(body)) + body, timeouts.get("write"))
            status, reason, headers = await _read_head(conn.reader, timeouts.get("read"))
            framing = _framing(request.method, status, headers)
        except BaseException:
            conn.close()
            raise
        stream = _ResponseBody(self, origin, conn, framing, timeouts.get("read"))
        return httpx2.Response(
            status, headers=headers, stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )  # fmt: skip

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest_usable = time.monotonic() - self._expiry
        while idle:
            conn = idle.pop()  # the most recently used first: the rest are older still
            if conn.idle_since < oldest_usable:
                for stale in (conn, *idle):
                    stale.close()
                idle.clear()
            elif conn.reusable:
                return conn
            else:
                conn.close()
        return None

    def _checkin(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= self._max_idle or not conn.reusable:
            conn.close()
        else:
            conn.idle_since = time.monotonic()
            idle.append(conn)

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        tls = self._ssl_context() if scheme == "https" else None
        with _mapped(httpx2.ConnectTimeout, httpx2.ConnectError):
            async with asyncio.timeout(timeout):
                # No happy_eyeballs_delay: uvloop, which `serve` runs on, does not take it.
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=_HEAD_LIMIT
                )
        return _Connection(reader, writer)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        return self._ssl

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _head(request: httpx2.Request, length: int) -> bytes:
    """Request line and headers; the body is always sent with a Content-Length."""
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target)]
    for name, value in request.headers.raw:
        if name.lower() not in (b"content-length", b"transfer-encoding"):
            lines.append(b"%s: %s" % (name, value))
    if length or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(b"Content-Length: %d" % length)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    # A CR, LF or NUL inside a name or value would smuggle a header (h11 refuses them too): one line
    # ending per line, no more.
    if head.count(b"\n") != len(lines) + 1 or head.count(b"\r") != len(lines) + 1 or b"\0" in head:
        raise httpx2.LocalProtocolError("a request header contains CR, LF or NUL")
    return head


async def _send(conn: _Connection, data: bytes, timeout: float | None) -> None:
    with _mapped(httpx2.WriteTimeout, httpx2.WriteError):
        try:
            conn.writer.write(data)
        except RuntimeError as exc:  # uvloop refuses a write on a handle already closed
            raise httpx2.WriteError(str(exc)) from exc
        async with asyncio.timeout(timeout):
            await conn.writer.drain()


async def _read_head(reader: asyncio.StreamReader, timeout: float | None) -> Head:
    while True:
        with _mapped(httpx2.ReadTimeout, httpx2.ReadError):
            async with asyncio.timeout(timeout):
                raw = await reader.readuntil(b"\r\n\r\n")
        status, reason, headers = _parse_head(raw)
        if not 100 <= status < 200:  # skip interim responses (100 Continue, 103 Early Hints)
            return status, reason, headers


def _parse_head(raw: bytes) -> Head:
    status_line, *header_lines = raw[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise httpx2.RemoteProtocolError(f"malformed status line {status_line[:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in header_lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx2.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    if version == b"HTTP/1.0":  # closes after each response unless it says otherwise
        headers.append((b"connection", b"close"))
    return int(code), reason, headers


def _chunk_size(line: bytes) -> int:
    size_text = line.split(b";", 1)[0].strip()
    try:
        return int(size_text, 16)
    except ValueError:
        raise httpx2.RemoteProtocolError(f"malformed chunk size {size_text[:40]!r}") from None


class _Framing:
    """How the body ends: chunked, a Content-Length, the connection closing, or no body."""

    __slots__ = ("chunked", "length", "keep_alive")

    def __init__(self, chunked: bool, length: int | None, keep_alive: bool) -> None:
        self.chunked, self.length, self.keep_alive = chunked, length, keep_alive


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> _Framing:
    values = {name.lower(): value for name, value in headers}
    keep_alive = b"close" not in values.get(b"connection", b"").lower()
    if method == "HEAD" or status in (204, 304):
        return _Framing(False, 0, keep_alive)
    if b"chunked" in values.get(b"transfer-encoding", b"").lower():
        return _Framing(True, None, keep_alive)
    length = values.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise httpx2.RemoteProtocolError(f"malformed Content-Length {length[:40]!r}")
        return _Framing(False, int(length), keep_alive)
    return _Framing(False, None, False)  # read to EOF; the connection cannot be reused


class _ResponseBody(httpx2.AsyncByteStream):
    """The body as it arrives; the connection returns to the pool only once the body was read whole."""

    def __init__(
        self, transport: GatewayTransport, origin: Origin, conn: _Connection, framing: _Framing, timeout: float | None
    ) -> None:
        self._transport, self._origin, self._conn = transport, origin, conn
        self._framing, self._timeout = framing, timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._done:
            return
        reader = self._conn.reader
        try:
            async for piece in self._pieces(reader):
                yield piece
        except BaseException:
            self._finish(reusable=False)
            raise
        self._finish(reusable=self._framing.keep_alive)

    async def _pieces(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        with _mapped(httpx2.ReadTimeout, httpx2.ReadError):
            if self._framing.chunked:
                async for piece in self._chunks(reader):
                    yield piece
            elif self._framing.length is not None:
                left = self._framing.length
                while left:
                    piece = await self._read(reader, min(left, _READ_SIZE))
                    if not piece:
                        raise httpx2.RemoteProtocolError("server disconnected before the end of the body")
                    left -= len(piece)
                    yield piece
            else:
                while piece := await self._read(reader, _READ_SIZE):
                    yield piece

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            async with asyncio.timeout(self._timeout):  # one timer a chunk: its size line and data arrive together
                size = _chunk_size(await reader.readuntil(b"\r\n"))
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                        pass
                    return
                data = await reader.readexactly(size + 2)
            yield data[:-2]

    async def _read(self, reader: asyncio.StreamReader, size: int) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await reader.read(size)

    def _finish(self, *, reusable: bool) -> None:
        if self._done:
            return
        self._done = True
        if reusable:
            self._transport._checkin(self._origin, self._conn)
        else:
            self._conn.close()

    async def aclose(self) -> None:
        # Closed before the body ended (cancellation, an error, a caller that stopped reading):
        # the connection is mid-response and cannot be reused; closing it tells the upstream at once.
        self._finish(reusable=False)


@contextlib.contextmanager
def _mapped(on_timeout: type[httpx2.TransportError], on_error: type[httpx2.TransportError]) -> Iterator[None]:
    """asyncio and socket failures as the httpx2 exception httpcore2 would raise in the same place."""
    try:
        yield
    except TimeoutError as exc:
        raise on_timeout(str(exc) or "timed out") from exc
    except asyncio.IncompleteReadError as exc:
        raise httpx2.RemoteProtocolError("server disconnected before the end of the response") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx2.RemoteProtocolError("response head or chunk line too long") from exc
    except (OSError, ssl.SSLError) as exc:
        raise on_error(f"{type(exc).__name__}: {exc}") from exc


def http_client(config: ProviderConfig, **kwargs: Any) -> httpx2.AsyncClient:
    """The httpx2 client an adapter gives its SDK, with this transport underneath.

    `http_client: httpx` in the provider's config keeps httpx2's own stack (httpcore2), the way back
    if an upstream ever disagrees with this transport.

    httpx2 ignores HTTP(S)_PROXY / ALL_PROXY once a transport is given, so the proxies from the
    environment are mounted here, through httpx2's own proxy transport; NO_PROXY hosts (mounted as
    None) and everything else use this transport.
    """
    if config.http_client == "httpx":
        return httpx2.AsyncClient(**kwargs)
    proxies = get_environment_proxies()
    mounts = {pattern: httpx2.AsyncHTTPTransport(proxy=url) if url else None for pattern, url in proxies.items()}
    return httpx2.AsyncClient(transport=GatewayTransport(), mounts=mounts, **kwargs)
