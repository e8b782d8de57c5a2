"""A raw TCP upstream for transport tests: it answers each request with scripted bytes, framed any way
(or no way) HTTP allows, and records which connection carried which request and when each closed.

Bodies are the simulator's own SSE for each wire format, so the SDKs read them as they would a real
provider's. The request side is read just enough to know where a request ends (the SDKs always send a
Content-Length).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llm_simulator import wire_anthropic, wire_cohere, wire_gemini, wire_openai
from llm_simulator.plan import Plan, Prompt

WIRES = {
    "openai": wire_openai,
    "openai_compatible": wire_openai,
    "anthropic": wire_anthropic,
    "gemini": wire_gemini,
    "cohere": wire_cohere,
}


def sse_frames(kind: str, text: str) -> list[bytes]:
    """The SSE events of a whole, valid streamed answer `text` in `kind`'s wire format (the simulator's)."""
    api = "openai" if kind.startswith("openai") else kind
    prompt = Prompt(api=api, model="m", stream=True, messages=[("user", "hi")], include_usage=True)
    plan = Plan(reasoning=[], text=[text], calls=[], finish="stop", input_tokens=1, output_tokens=1)
    return [frame.data for frame in WIRES[kind].frames(plan, prompt, "req")]


def sse_body(kind: str, text: str) -> bytes:
    return b"".join(sse_frames(kind, text))


def head(*lines: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"\r\n".join((status, b"content-type: text/event-stream", *lines)) + b"\r\n\r\n"


def with_length(body: bytes) -> bytes:
    """A well-framed response: Content-Length, kept alive."""
    return head(b"content-length: %d" % len(body)) + body


def chunk(data: bytes, size: bytes | None = None, end: bytes = b"\r\n") -> bytes:
    return (size if size is not None else b"%x" % len(data)) + b"\r\n" + data + end


# What one request is answered with: bytes to send, then what happens to the connection.
KEEP, CLOSE, RESET = "keep", "close", "reset"


@dataclass
class Answer:
    data: bytes | Callable[[], Iterator[bytes]]  # the bytes, or pieces made as they are sent (bounded memory)
    then: str = KEEP  # keep | close (FIN) | reset (RST)
    after_idle: bytes = b""  # sent once the answer was sent, on the idle connection (unsolicited)


@dataclass
class Conn:
    index: int
    requests: list[int] = field(default_factory=list)  # request numbers (over the whole server) it carried
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class RawUpstream:
    def __init__(self, answer: Callable[[int], Answer]) -> None:
        self.answer = answer  # request number (from 0) -> Answer
        self.conns: list[Conn] = []
        self.requests = 0
        self.idle_data_sent = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def conn_of(self, request: int) -> Conn:
        return next(c for c in self.conns if request in c.requests)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        conn = Conn(len(self.conns))
        self.conns.append(conn)
        try:
            while True:
                try:
                    request_head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    conn.closed.set()
                    return
                length = 0
                for line in request_head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                number = self.requests
                self.requests += 1
                conn.requests.append(number)
                answer = self.answer(number)
                for piece in [answer.data] if isinstance(answer.data, bytes) else answer.data():
                    writer.write(piece)
                    await writer.drain()
                if answer.after_idle:
                    writer.write(answer.after_idle)
                    await writer.drain()
                    self.idle_data_sent.set()
                if answer.then != KEEP:
                    conn.closed.set()  # by the server, which is as good: it cannot be reused
                if answer.then == RESET:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if answer.then == CLOSE:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.closed.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError, ssl.SSLError):
                await writer.wait_closed()


@asynccontextmanager
async def raw_upstream(
    answer: Callable[[int], Answer], tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[RawUpstream, int]]:
    upstream = RawUpstream(answer)
    listener = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield upstream, listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        for task in upstream._tasks:
            task.cancel()
        await asyncio.gather(*upstream._tasks, return_exceptions=True)


async def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    return port


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context


def make_pki(tmp: Path) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, san: x509.GeneralName | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    files = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
    files["server_cert"], files["server_key"] = leaf("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    files["client_cert"], files["client_key"] = leaf("gateway", None)
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / f"{name}.pem"
        paths[name].write_bytes(data)
    return Pki(**paths)
