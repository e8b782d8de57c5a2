"""The gateway's channel to the schema service, with its credentials re-read when their files change.

Rotation follows servicekit.tls's for server certificates: a file's stamp (inode, mtime, size, taken
through the symlink Kubernetes swaps) is compared before each batch, and a changed set is taken only
once it loads (a certificate written before its key is not used half-way; the old one stays meanwhile)
and did not change while being read (a writer at work: it is read again at the next look).
- The bearer token is call credentials: gRPC asks `TokenFile` for it on each call (on its own thread,
  off the event loop), and the file is read again when its stamp changed.
- A client certificate, its key or the CA are channel credentials, fixed for a channel's life: a change
  opens a new channel for the next batches, and the old one is closed with a grace that lets a call in
  flight finish (a call that fails there anyway is retried by the sender, with its request_id).

`metrics_sender` and `usage_sender` turn the stub's AioRpcError into the sender's SendError: the code's name,
the server's message, whether a retry can help, and the RetryInfo delay when the server gave one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway_service.sender import SendError
from gateway_service.usage.seed import Query, Spent
from schemaservice.v1 import metrics_service_pb2, metrics_service_pb2_grpc, usage_service_pb2, usage_service_pb2_grpc
from servicekit.callers import SetupError
from servicekit.tls import ClientCredentials
from servicekit.tracing import Tracing

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]
T = TypeVar("T")
WRITE_TIMEOUT_S = 5.0
RETIRE_GRACE_S = 10.0  # a replaced channel's calls in flight get this long to finish
# Only these can never pass on a retry of the same batch; every other failure waits and tries again.
NOT_RETRYABLE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def stamp(paths: Sequence[Path]) -> Stamp:
    stats = [os.stat(p) for p in paths]  # through the symlink: a swapped file is a new inode
    return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)


class Reloaded(Generic[T]):
    """A value read from files, read again when their stamp changed: the rules of the module docstring.

    A read that fails keeps the previous value and refuses that stamp (logged once, until the files change
    again); a read during which the files changed is not taken, and the next look reads them again.
    """

    def __init__(self, paths: Sequence[Path], read: Callable[[], T], what: str) -> None:
        self.paths, self._read, self.what = paths, read, what
        self.stamp = stamp_or_setup_error(paths)
        self.value = read()
        self._refused: Stamp | None = None
        self._error: str | None = None

    def current(self) -> tuple[T, bool]:
        """The value, and whether it is new since the last look."""
        seen = stamp_or_none(self.paths)
        if seen is not None and seen in (self.stamp, self._refused):
            return self.value, False
        try:
            checked = seen if seen is not None else stamp(self.paths)  # the OSError says which file is away
            value = self._read()
        except (OSError, SetupError) as exc:
            self._refused = seen
            if str(exc) != self._error:  # once per new error, not at every look
                self._error = str(exc)
                log.error(f"{self.what} not reloaded; the previous one stays in use", extra={"error": str(exc)})
            return self.value, False
        if stamp_or_none(self.paths) != checked:
            return self.value, False  # written while being read: looked at again next time
        self.stamp, self.value, self._error = checked, value, None
        log.info(f"{self.what} reloaded", extra={"files": [str(p) for p in self.paths]})
        return value, True


class TokenFile(grpc.AuthMetadataPlugin):
    """`authorization: Bearer <token>` for each call, from a file read again whenever it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # gRPC may ask from more than one of its threads
        self._token = Reloaded([path], self._load, "schema-service token")

    def _load(self) -> str:
        token = (_read(self.path) or b"").decode().strip()
        if not token:
            raise SetupError(f"{self.path}: the token file is empty")
        return token

    def current(self) -> str:
        with self._lock:
            return self._token.current()[0]

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", f"Bearer {self.current()}"),), None)


def stamp_or_none(paths: Sequence[Path]) -> Stamp | None:
    try:
        return stamp(paths)
    except OSError:
        return None


def stamp_or_setup_error(paths: Sequence[Path]) -> Stamp:
    try:
        return stamp(paths)
    except OSError as exc:
        raise SetupError(f"{exc.filename}: {exc.strerror}") from None


class SchemaChannel:
    """The current channel to `address`; `current()` opens a new one when the TLS files changed and load."""

    def __init__(
        self, address: str, client: ClientCredentials, tracing: Tracing | None = None, reconnect_max_s: float = 5.0
    ) -> None:
        if client.token_file is not None and not client.tls:
            raise SetupError("a token is only sent over TLS: give the schema service's CA (or enable TLS)")
        if (client.cert is None) != (client.key is None):
            raise SetupError("a client certificate needs its key, and a key its certificate")
        self.address, self.client = address, client
        self._interceptors = tracing.client_interceptors() if tracing else None  # trace context to the schema service
        self._options = channel_options(reconnect_max_s)
        self._token = TokenFile(client.token_file) if client.token_file is not None else None
        files = [p for p in (client.ca, client.cert, client.key) if p is not None] if client.tls else []
        self._files = files
        self._tls = Reloaded(files, self._credentials, "schema-service client TLS files")
        self.channel = self._open(self._tls.value)
        self._retiring: set[asyncio.Task[None]] = set()

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if not self.client.tls:
            return None
        ca, cert, key = (_read(p) for p in (self.client.ca, self.client.cert, self.client.key))
        if self.client.cert is not None and self.client.key is not None:
            try:  # the standard library's loader checks that the key belongs to the certificate
                ssl.create_default_context().load_cert_chain(self.client.cert, self.client.key)
            except (OSError, ssl.SSLError) as exc:
                raise SetupError(f"client certificate {self.client.cert}, key {self.client.key}: {exc}") from None
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        if self._token is None:
            return credentials
        return grpc.composite_channel_credentials(credentials, grpc.metadata_call_credentials(self._token))

    def _open(self, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        if credentials is None:
            return grpc.aio.insecure_channel(self.address, options=self._options, interceptors=self._interceptors)
        return grpc.aio.secure_channel(
            self.address, credentials, options=self._options, interceptors=self._interceptors
        )

    async def current(self) -> grpc.aio.Channel:
        """The channel for the next call; the files are looked at off the event loop (a hung mount waits alone)."""
        if not self._files:
            return self.channel
        credentials, changed = await asyncio.to_thread(self._tls.current)
        if changed:
            old, self.channel = self.channel, self._open(credentials)
            task = asyncio.create_task(old.close(RETIRE_GRACE_S))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return self.channel

    async def close(self) -> None:
        await self.channel.close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


def channel_options(reconnect_max_s: float) -> list[tuple[str, Any]]:
    # round_robin spreads batches over every schema-service pod behind a headless Service
    # (dns:///schema-service-headless:50052); with one address it is the same as pick_first.
    service_config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
    backoff_ms = max(int(reconnect_max_s * 1000), 100)
    return [
        ("grpc.service_config", service_config),
        # gRPC's own reconnect backoff grows to 120 s: a schema service back after a long outage would
        # wait that long for a connection. Capped, the sender's backoff is the one that paces retries.
        ("grpc.initial_reconnect_backoff_ms", min(1000, backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
        # A channel made after a certificate change must not share connections (made with the old one).
        ("grpc.use_local_subchannel_pool", 1),
    ]


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SetupError(f"{path}: {exc.strerror}") from None


Send = Callable[[metrics_service_pb2.WriteMetricsRequest], Awaitable[None]]
UsageSend = Callable[[usage_service_pb2.RecordUsageRequest], Awaitable[None]]
M = TypeVar("M")
SPENT_GROUPS = (
    usage_service_pb2.USAGE_DIMENSION_CALLER,
    usage_service_pb2.USAGE_DIMENSION_USER,
    usage_service_pb2.USAGE_DIMENSION_DAY,
)


def metrics_sender(channel: SchemaChannel) -> Send:
    """WriteMetrics through the generated stub (never the schema service's code) on the current channel."""
    return _sender(
        channel,
        lambda ch, batch: metrics_service_pb2_grpc.MetricsServiceStub(ch).WriteMetrics(batch, timeout=WRITE_TIMEOUT_S),
    )


def usage_sender(channel: SchemaChannel) -> UsageSend:
    """RecordUsage through the generated stub on the current channel (the usage ledger's writer)."""
    return _sender(
        channel,
        lambda ch, batch: usage_service_pb2_grpc.UsageServiceStub(ch).RecordUsage(batch, timeout=WRITE_TIMEOUT_S),
    )


def _sender(
    channel: SchemaChannel, call: Callable[[grpc.aio.Channel, M], Awaitable[object]]
) -> Callable[[M], Awaitable[None]]:
    async def send(batch: M) -> None:
        try:
            await call(await channel.current(), batch)
        except grpc.aio.AioRpcError as exc:
            raise send_error(exc) from exc

    return send


def usage_spent(channel: SchemaChannel, *, timeout_s: float = WRITE_TIMEOUT_S) -> Query:
    """QueryUsage's groups by caller, user and day since a time, every page (needs usage.read and read_all)."""

    async def spent(since: datetime) -> AsyncIterator[Spent]:
        stub = usage_service_pb2_grpc.UsageServiceStub(await channel.current())
        request = usage_service_pb2.QueryUsageRequest(group_by=SPENT_GROUPS, page_size=1000)
        request.start_time.FromDatetime(since)
        while True:
            page = await stub.QueryUsage(request, timeout=timeout_s)
            for g in page.groups:
                yield Spent(g.caller, g.user_id, g.day, Decimal(g.cost_usd or "0"))
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    return spent


def send_error(exc: grpc.aio.AioRpcError) -> SendError:
    """The code, the server's message, whether to retry, and the RetryInfo delay if any."""
    retry_after_s = None
    status = rpc_status.from_call(exc)  # an AioRpcError has the accessors of a finished call
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after_s = info.retry_delay.ToTimedelta().total_seconds()
    code = exc.code()
    return SendError(code.name, exc.details() or "", retryable=code not in NOT_RETRYABLE, retry_after_s=retry_after_s)
