"""The OpenAI-compatible port's connections: how many may be open at once, and how soon each must send a request.

aiohttp's server takes every connection and waits for its headers as long as the client likes, so without
these a client could hold thousands of sockets open with a request line it never finishes (the gRPC port
closes a connection that never speaks HTTP/2 after 10 s). Each connection's protocol is aiohttp's own,
wrapped: past MAX_CONNECTIONS a new connection is closed at once, and one that has not delivered a request
(its headers parsed and handed to the application) within FIRST_REQUEST_S is closed. Between requests of a
kept-alive connection aiohttp's own keep-alive timeout applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from servicekit.concurrency import Throttle

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024
FIRST_REQUEST_S = 10.0
_logged = Throttle(60.0)


class Connections:
    """Open connections of one port, and the deadlines of those that have sent no request yet."""

    def __init__(self, max_open: int = MAX_CONNECTIONS, first_request_s: float = FIRST_REQUEST_S) -> None:
        self.max_open = max_open
        self.first_request_s = first_request_s
        self.open = 0
        self._deadlines: dict[int, asyncio.TimerHandle] = {}  # id(transport) -> its first request's deadline

    def factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server`: aiohttp's protocols (`inner()`), held to these limits."""
        return lambda: _Guarded(inner(), self)

    def spoke(self, transport: Any) -> None:
        """The connection delivered a request: its first-request deadline is over."""
        deadline = self._deadlines.pop(id(transport), None)
        if deadline is not None:
            deadline.cancel()

    def _opened(self, transport: asyncio.BaseTransport) -> bool:
        if self.open >= self.max_open:
            if _logged.first("too many connections"):
                log.warning("connection refused: too many open", extra={"max": self.max_open, "once_per_s": 60})
            transport.close()
            return False
        self.open += 1
        loop = asyncio.get_running_loop()
        self._deadlines[id(transport)] = loop.call_later(self.first_request_s, self._silent, transport)
        return True

    def _silent(self, transport: asyncio.BaseTransport) -> None:
        self._deadlines.pop(id(transport), None)
        if _logged.first("no request"):
            log.warning("connection closed: no request within its deadline", extra={"seconds": self.first_request_s})
        transport.close()

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        self.open -= 1
        self.spoke(transport)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted and given its first-request deadline."""

    def __init__(self, inner: Any, connections: Connections) -> None:
        self.inner = inner
        self.connections = connections
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.connections._opened(transport):
            self.transport = transport
            self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.connections._closed(self.transport)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.transport is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
