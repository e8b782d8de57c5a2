"""A small HTTP/1.1 server on asyncio streams, with the low-level control a fault injector needs.

A framework would hide exactly what the simulator must do on purpose: stop writing
mid-body, abort the TCP connection, end a chunked body without the last event,
and notice at once that the client went away while nothing is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Responder:
    """Writes one response; `gone` is set as soon as the client closes its side."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    keep_alive: bool = True
    _watch: asyncio.Task[None] | None = None

    async def send_json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        head = {"content-type": "application/json", "content-length": str(len(data)), **(headers or {})}
        self.writer.write(self._head(status, head) + data)
        await self.writer.drain()

    async def start_stream(self, headers: dict[str, str]) -> None:
        head = {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked"}
        self.writer.write(self._head(200, {**head, **headers}))
        # While streaming, the client sends nothing; EOF on the read side means it hung up.
        self._watch = asyncio.create_task(self._watch_eof())
        await self.writer.drain()

    async def send_chunk(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        await self._stop_watch()

    def abort(self) -> None:
        """Drop the TCP connection without finishing the body."""
        self.keep_alive = False
        self.writer.transport.abort()

    async def _watch_eof(self) -> None:
        data = b""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            data = await self.reader.read(1)
        if not data:
            self.gone.set()

    async def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if not self.keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Handler = Callable[[Request, Responder], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None when the client closed it."""
    line = await reader.readline()
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    parts = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return Request(method.upper(), parts.path, query, headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
        return body
    return await reader.readexactly(int(headers.get("content-length", "0")))


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    """Keep-alive loop: one request after another until either side closes."""
    try:
        while (request := await read_request(reader)) is not None:
            responder = Responder(reader, writer, keep_alive=request.headers.get("connection") != "close")
            try:
                await handler(request, responder)
            finally:
                await responder._stop_watch()
            if not responder.keep_alive or responder.gone.is_set():
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()
