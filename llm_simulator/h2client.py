"""A hostile HTTP/2 client written with the `h2` state machine over asyncio streams.

For tests/hostile and bench/attack.py; like the simulator, a development tool that shipped code never
imports. It does what a gRPC library never would: announce a large message and send only part of it (the
slow drip), send headers a stub would not, and read the server's HTTP/2 SETTINGS as they are.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

CHUNK = 16 * 1024


@dataclass
class Stream:
    """One call: the status it ended with (None while open) and how many body bytes went out."""

    status: int | None = None
    message: str = ""
    sent: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class H2Client:
    """One HTTP/2 connection to a gRPC server; `drip` opens calls that never finish their message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str) -> None:
        self.reader, self.writer, self.authority = reader, writer, authority
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.streams: dict[int, Stream] = {}
        self.settings: dict[int, int] = {}
        self.settled = asyncio.Event()  # the server's first SETTINGS arrived
        self.closed = asyncio.Event()
        self._window = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None = None, *, settle: bool = True) -> H2Client:
        """A connection whose preface is sent; with `settle`, once the server's SETTINGS came (ConnectionError if
        the server closed it first), else at once, so calls can go out before the server said anything."""
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None)
        client = cls(reader, writer, f"{host}:{port}")
        client.conn.initiate_connection()
        client.conn.increment_flow_control_window(1 << 30)
        client._flush()
        client._reading = asyncio.get_running_loop().create_task(client._read())
        if settle:
            settled = asyncio.ensure_future(client.settled.wait())
            closed = asyncio.ensure_future(client.closed.wait())
            await asyncio.wait((settled, closed), return_when=asyncio.FIRST_COMPLETED)
            settled.cancel()
            closed.cancel()
            if not client.settled.is_set():
                await client.close()
                raise ConnectionError("the server closed the connection before its HTTP/2 SETTINGS")
        return client

    def open(self, path: str, metadata: tuple[tuple[str, str], ...] = ()) -> int:
        """Send a call's headers; the stream id."""
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https" if self.writer.get_extra_info("sslcontext") else "http"),
            (":path", path),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        self.conn.send_headers(stream_id, headers)
        self.streams[stream_id] = Stream()
        self._flush()
        return stream_id

    def drip(self, path: str, announced: int, send: int, metadata: tuple[tuple[str, str], ...] = ()) -> int:
        """A call announcing a message of `announced` bytes, of which only the first `send` are ever sent."""
        stream_id = self.open(path, metadata)
        body = struct.pack(">BI", 0, announced)
        task = asyncio.get_running_loop().create_task(self._send(stream_id, body, min(send, announced)))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)
        return stream_id

    async def status(self, stream_id: int) -> int | None:
        await self.streams[stream_id].ended.wait()
        return self.streams[stream_id].status

    async def close(self) -> None:
        for task in (*self._senders, *([self._reading] if self._reading else [])):
            task.cancel()
        if self.writer.get_extra_info("sslcontext") is not None:
            # Dropped, not shut down: asyncio would wait up to 30 s for a TLS close_notify gRPC does not send.
            self.writer.transport.abort()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass

    async def _send(self, stream_id: int, prefix: bytes, length: int) -> None:
        pending, left = prefix, length
        stream = self.streams[stream_id]
        while (pending or left) and not stream.ended.is_set():
            window = self.conn.local_flow_control_window(stream_id)
            if window <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            take = min(window, CHUNK) - len(pending)
            chunk = pending + bytes(max(0, min(take, left)))
            left -= len(chunk) - len(pending)
            self.conn.send_data(stream_id, chunk)
            stream.sent += len(chunk)
            pending = b""
            self._flush()
            try:
                await self.writer.drain()
            except (ConnectionError, ssl.SSLError):
                return  # the server dropped the connection (_read sees it too)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.conn.receive_data(data):
                    self._on(event)
                self._flush()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            self._window.set()
            for stream in self.streams.values():
                stream.ended.set()

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
            self.settled.set()
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            stream = self.streams.get(event.stream_id)
            headers = {bytes(k): bytes(v) for k, v in event.headers or ()}
            if stream is not None and b"grpc-status" in headers:
                stream.status = int(headers[b"grpc-status"])
                stream.message = headers.get(b"grpc-message", b"").decode("utf-8", "replace")
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            if event.stream_id in self.streams:
                self.streams[event.stream_id].ended.set()
        elif isinstance(event, h2.events.WindowUpdated):
            self._window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed.set()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)


MAX_CONCURRENT_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
MAX_FRAME_SIZE = h2.settings.SettingCodes.MAX_FRAME_SIZE
MAX_HEADER_LIST_SIZE = h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE
INITIAL_WINDOW_SIZE = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
