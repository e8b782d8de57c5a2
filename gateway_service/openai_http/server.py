"""The OpenAI-compatible HTTP face (aiohttp.web) over the same pipeline as the gRPC ChatService.

    POST /v1/chat/completions    streaming (SSE, `data: [DONE]`) and not; a route name (or provider/model) is `model`
    GET  /v1/models              the routes, as OpenAI's model list

Off unless `--openai-port` (OPENAI_PORT) is given. The same doors as the gRPC port, in the same order and
on the headers, before a byte of the body is read: the callers file (`Authorization: Bearer`, or the
client certificate's subject under mTLS), the role `chat`, the caller's request rate, then a slot of the
gRPC server's own (servicekit.concurrency: an HTTP chat counts as a chat beside the gRPC ones). The body is
bounded by `requests.max_request_bytes` (413 past it, read without buffering more) and must arrive within
BODY_TIMEOUT_S (408). TLS from the same files as the gRPC port, reloaded the same way.

Errors are OpenAI's error JSON with the status the SDKs expect (openai_http/errors.py). A stream opens
(HTTP 200) only with its first output, so a failure before any output (every provider rate limited, a
budget) still gets its real status and Retry-After; a failure after output ends the stream with an `error`
event and no `[DONE]`, which the OpenAI SDKs raise as an APIError, so a truncated answer never passes for
a whole one. Mid-stream failover is the gRPC default (FAIL): output already sent cannot be taken back on
this wire. Every answer carries `x-request-id` and, once known, `x-gateway-provider` (provider/model).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509
from google.rpc import code_pb2

from gateway_service.app import Gateway
from gateway_service.chat.aggregate import Answer
from gateway_service.domain.events import AttemptStarted, Completed, OutputDelta
from gateway_service.domain.request import ChatRequest
from gateway_service.errors import GatewayError, InvalidRequest
from gateway_service.openai_http import answers, wire
from gateway_service.openai_http.connections import Connections
from gateway_service.openai_http.errors import error_body, headers_of, status_of
from servicekit.auth import (
    Admit,
    BadCredentials,
    Unauthenticated,
    bearer_token,
)
from servicekit.callers import Caller, CallersSource
from servicekit.concurrency import Slots
from servicekit.drain import Drain, GraceOver, ServerShuttingDown
from servicekit.errors import FieldViolation, ServiceError
from servicekit.gate import check_caller
from servicekit.ids import valid_id
from servicekit.logs import caller_var, request_id_var
from servicekit.tls import HttpsContexts, TlsFiles

log = logging.getLogger(__name__)


BODY_TIMEOUT_S = 10.0  # a body that has not arrived by then is a slow client holding a slot: 408
CHAT_METHOD = "/llmgateway.v1.ChatService/StreamChat"  # the slots and logs count an HTTP chat as this method
ROLE = "chat"
CUT_BY_SHUTDOWN = "server shut down before the answer was complete; retry the call"
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


class HttpRefusal(GatewayError):
    """A refusal only this face has: its HTTP status is its own (aiohttp's 404/405, a slow or huge body)."""

    code = code_pb2.INVALID_ARGUMENT

    def __init__(self, message: str, http_status: int, reason: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason


@dataclass
class Doors:
    """Who may call and whether there is room, decided on the headers (the gRPC gate's order)."""

    slots: Slots
    callers: CallersSource | None
    admit: Admit | None
    mtls: bool

    async def enter(self, request: web.Request, method: str) -> Callable[[], None]:
        """The slot's release for an admitted call; a ServiceError saying why not."""
        caller = await self._caller(request, method) if self.callers is not None else None
        slot = self.slots.take(method, caller.name if caller is not None else "")
        if not callable(slot):
            raise slot
        return slot

    async def _caller(self, request: web.Request, method: str) -> Caller:
        assert self.callers is not None
        details = {"role": ROLE, "method": method}
        try:
            token = bearer_token([("authorization", v) for v in request.headers.getall("Authorization", [])])
        except BadCredentials as exc:
            raise Unauthenticated(str(exc), metadata=details) from None
        known = self.callers.current()
        caller = known.by_bearer(token) if token is not None else None
        # OpenAI's SDKs always send some key: under mTLS, a token that names no caller leaves it to the certificate
        # (which the handshake verified), where the gRPC port would refuse it.
        if caller is None and self.mtls:
            subject = _certificate_subject(request)
            caller = known.by_certificate(subject) if subject is not None else None
        refusal = await check_caller(caller, ROLE, method, self.admit)
        if refusal is not None:
            raise refusal[0]
        assert caller is not None
        return caller


def _certificate_subject(request: web.Request) -> str | None:
    """The verified client certificate's subject, written as gRPC writes it (RFC 4514, e.g. `CN=web`)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None


class OpenAIFace:
    """The handlers of one gateway's OpenAI-compatible port."""

    def __init__(self, gateway: Gateway, doors: Doors, drain: Drain) -> None:
        self.gateway = gateway
        self.doors = doors
        self.drain = drain
        self.bounds = gateway.config.requests
        self.connections = Connections()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.bounds.max_request_bytes, middlewares=[self._errors])
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        """Every answer has its request id; every failure becomes OpenAI's error JSON (never a traceback)."""
        request_id = _request_id(request)
        self.connections.spoke(request.transport)
        caller_var.set("")
        try:
            response = await handler(request)
        except ServiceError as exc:
            response = _error_response(exc)
        except web.HTTPException as exc:  # aiohttp's own: 404 route, 405 method, 413 body
            reason = "REQUEST_TOO_LARGE" if exc.status == 413 else "NOT_FOUND" if exc.status == 404 else "BAD_REQUEST"
            response = _error_response(HttpRefusal(exc.reason, exc.status, reason))
        except Exception:
            log.exception("OpenAI-compatible %s failed", request.path)
            response = _error_response(ServiceError("internal error; see the gateway's log"))
        if not response.prepared:
            response.headers["x-request-id"] = request_id
        return response

    async def models(self, request: web.Request) -> web.Response:
        release = await self.doors.enter(request, "/llmgateway.v1.ProviderService/ListProviders")
        try:
            config = self.gateway.config
            names = list(config.routes) + [f"{p.name}/{m.name}" for p in config.providers for m in p.models]
            data = [{"id": name, "object": "model", "created": 0, "owned_by": "llm-gateway"} for name in names]
            return web.json_response({"object": "list", "data": data})
        finally:
            release()

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        release = await self.doors.enter(request, CHAT_METHOD)
        if self.drain.stopping.is_set():
            release()
            raise ServerShuttingDown("server is shutting down; retry the call", retry_after_s=0)
        self.drain.enter()
        try:
            with self.gateway.in_flight("OpenAIChatCompletions"):
                body = await _body(request)
                wanted, chat = wire.parse(body, request_id_var.get(), self.bounds)
                try:
                    return await self._answer(request, wanted, chat)
                except InvalidRequest as exc:
                    if type(exc) is not InvalidRequest:
                        raise
                    raise wire.in_openai_names(exc) from None  # the pipeline names the gRPC request's fields
        except GraceOver:
            raise ServerShuttingDown(CUT_BY_SHUTDOWN, retry_after_s=0) from None
        finally:
            self.drain.leave()
            release()

    async def _answer(
        self, request: web.Request, wanted: wire.ChatCompletionRequest, chat: ChatRequest
    ) -> web.StreamResponse:
        run = self.gateway.start_chat(chat, None)
        completion_id = f"chatcmpl-{chat.request_id}"
        async with self.drain.cut_scope(), aclosing(run.events()) as events:
            if wanted.stream:
                return await self._stream(request, events, answers.Chunks(completion_id, chat.model), wanted)
            answer = Answer()
            async for event in events:
                answer.add(event)
            response = web.json_response(answers.completion(completion_id, answer))
            done = answer.completed
            assert done is not None
            response.headers["x-gateway-provider"] = f"{done.provider}/{done.model}"
            return response

    async def _stream(
        self, request: web.Request, events: Any, chunks: answers.Chunks, wanted: wire.ChatCompletionRequest
    ) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        served = ""
        try:
            async for event in events:
                if isinstance(event, AttemptStarted):
                    served, chunks.model = f"{event.provider}/{event.model}", event.model
                    continue
                if isinstance(event, OutputDelta):
                    chunk = chunks.piece(event.piece)
                elif isinstance(event, Completed):
                    chunk = chunks.finish(event)
                else:
                    continue
                if response is None:
                    response = await _open(request, served)
                if chunk is not None:
                    await _send(response, chunk)
                if isinstance(event, Completed):
                    if wanted.include_usage:
                        await _send(response, chunks.usage(event))
                    await response.write(b"data: [DONE]\n\n")
        except (ServiceError, GraceOver) as exc:
            if response is None:
                raise  # nothing sent yet: the error gets its own status (the middleware)
            error = exc if isinstance(exc, ServiceError) else ServerShuttingDown(CUT_BY_SHUTDOWN, retry_after_s=0)
            log.warning("OpenAI-compatible stream ended by an error", extra={"reason": error.reason})
            await _send(response, error_body(error))
        except ConnectionResetError:
            if response is None:
                raise
            return response  # the client went away mid-stream: nobody is left to tell
        except Exception:
            if response is None:
                raise
            # The stream has begun: the middleware's error answer would be a second response inside it.
            log.exception("OpenAI-compatible stream failed")
            await _send(response, error_body(ServiceError("internal error; see the gateway's log")))
        assert response is not None
        await response.write_eof()
        return response


async def _open(request: web.Request, served: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": request_id_var.get()})
    if served:
        response.headers["x-gateway-provider"] = served
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")


async def _body(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise InvalidRequest(
            "the body must be JSON (content-type: application/json)",
            field_violations=[FieldViolation("content-type", "must be application/json")],
        )
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.read()
    except TimeoutError:
        raise HttpRefusal(f"the body did not arrive within {BODY_TIMEOUT_S:g} s", 408, "REQUEST_TIMEOUT") from None


def _request_id(request: web.Request) -> str:
    given = request.headers.get("x-request-id", "")
    request_id = given if valid_id(given) else uuid.uuid4().hex
    request_id_var.set(request_id)
    return request_id


def _error_response(exc: ServiceError) -> web.Response:
    status = exc.http_status if isinstance(exc, HttpRefusal) else status_of(exc)
    return web.json_response(error_body(exc), status=status, headers=headers_of(exc))


def _bad_http_in_one_line(record: logging.LogRecord) -> bool:
    """aiohttp logs a request it cannot parse (too many headers, a bad request line) with a traceback at ERROR:
    for a hostile client that is one WARNING line without the traceback, like the gRPC port's refusals."""
    if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
        record.msg = f"bad HTTP request refused: {record.exc_info[1].message}"
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


@dataclass
class Serving:
    """The running HTTP site; `close()` stops it (in-flight streams end with the gateway's drain)."""

    runner: web.AppRunner
    listening: asyncio.Server
    port: int
    connections: Connections

    async def close(self) -> None:
        self.listening.close()
        await self.runner.cleanup()
        await self.listening.wait_closed()


async def serve(
    gateway: Gateway,
    doors: Doors,
    drain: Drain,
    host: str,
    port: int,
    tls: TlsFiles | None,
) -> Serving:
    """Listen on `host:port` (0 picks a free one), TLS when `tls` is given."""
    face = OpenAIFace(gateway, doors, drain)
    server_log = logging.getLogger("aiohttp.server")
    if _bad_http_in_one_line not in server_log.filters:
        server_log.addFilter(_bad_http_in_one_line)
    # handler_cancellation: a client that goes away cancels its handler, which closes the upstream stream.
    runner = web.AppRunner(face.application(), handler_cancellation=True, access_log=None)
    await runner.setup()
    assert runner.server is not None
    ssl_context = HttpsContexts(tls).context if tls is not None else None
    # aiohttp's protocols behind a cap on open connections and a deadline for each one's first request
    # (openai_http/connections.py), on a listening socket of asyncio's own.
    listening = await asyncio.get_running_loop().create_server(
        face.connections.factory(runner.server),
        host.strip("[]") if host != "[::]" else None,
        port,
        ssl=ssl_context,
        reuse_address=True,
    )
    return Serving(runner, listening, int(listening.sockets[0].getsockname()[1]), face.connections)
