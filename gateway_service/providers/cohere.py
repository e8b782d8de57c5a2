"""Cohere v2 chat adapter on the `cohere` SDK (AsyncClientV2, streaming `v2/chat`).

The SDK is Fern-generated on httpx (not httpx2): it takes an `httpx_client`, and exports its own two,
`cohere.DefaultAioHttpClient` (httpx-aiohttp's HttpxAiohttpClient: aiohttp under httpx, as the other
SDKs' aiohttp clients) and `cohere.DefaultAsyncHttpxClient` (`http_client: httpx`). Either gets the same
settings and hooks as the other providers' (providers/http.py client_options, with httpx's own Limits),
so caps, the cross-origin redirect refusal, identity encoding and spans apply alike (providers/bounds.py
wraps both libraries' bodies). The client's timeout bounds connect at connect_timeout_s and the whole at
timeout_s; the Pacer (providers/streaming.py) does first token, idle gaps and the deadline. Streams are
never retried by the SDK, and max_retries=0 turns off its retries of other calls.

All failures are classified in `map_error`. The SDK raises one ApiError subclass per documented status
(400, 401, 403, 404, 422, 429, 498 invalid token, 499, 500, 501, 503, 504), a bare ApiError for any other
status, ParsingError for a body it could not read, and SSEError for a stream it could not frame;
`CLASS_KINDS` lists every one, and the table test pins the kind of every class the SDK defines. Error
bodies are `{"id": ..., "message": ...}`; the id is the upstream's request id.

Events the SDK skips (it drops an event that does not fit its types, and logs it whole) fail the attempt
and are logged without their text (providers/cohere_skips.py).

The request goes out through `with_raw_response.chat_stream` (the SDK's public raw client), whose context
holds the HTTP response open: closing the attempt exits it, which closes the response at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.http_sse import SSEError
from cohere.core.parse_error import ParsingError

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest
from gateway_service.health import retry_after_s
from gateway_service.providers import cohere_skips
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.classify import (
    body_error,
    kind_for_status,
    make_error,
    nearest_kind,
    other_error,
    transport_failure,
)
from gateway_service.providers.cohere_convert import EventTranslator, build_params
from gateway_service.providers.http import TransportSettings, client_options
from gateway_service.providers.scrub import scrub_id
from gateway_service.providers.streaming import SdkAdapter, Upstream, convert

K = FailureKind
# None: decided by the HTTP status and the body's message.
CLASS_KINDS: dict[type[BaseException], FailureKind | None] = {
    ApiError: None,
    cohere.BadRequestError: K.INVALID_REQUEST,
    cohere.UnauthorizedError: K.AUTH_FAILED,
    cohere.ForbiddenError: K.AUTH_FAILED,
    cohere.NotFoundError: K.AUTH_FAILED,  # unknown model: misconfigured provider
    cohere.UnprocessableEntityError: K.INVALID_REQUEST,
    cohere.TooManyRequestsError: K.RATE_LIMITED,
    cohere.InvalidTokenError: K.AUTH_FAILED,  # 498: the key is not a valid token
    cohere.ClientClosedRequestError: K.CONNECTION_ERROR,  # 499
    cohere.InternalServerError: K.SERVER_ERROR,
    cohere.NotImplementedError: K.SERVER_ERROR,
    cohere.ServiceUnavailableError: K.OVERLOADED,
    cohere.GatewayTimeoutError: K.TIMEOUT,
    ParsingError: K.MALFORMED_RESPONSE,
    # Not an event stream, or a line over the SDK's own 1 MiB: checked before the transport table, which would
    # take this httpx.TransportError subclass for a connection error.
    SSEError: K.MALFORMED_RESPONSE,
}


def class_kind(exc: BaseException) -> FailureKind | None:
    """Kind from the nearest class in CLASS_KINDS; None when the status and body decide."""
    return nearest_kind(exc, CLASS_KINDS)


def map_error(exc: Exception, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """The single place where anything the Cohere SDK or its transport raises becomes a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, SSEError):
        return make_error(K.MALFORMED_RESPONSE, f"SSEError: {exc}", secrets=secrets)
    below = transport_failure(exc, secrets)
    if below is not None:
        return below
    if isinstance(exc, ParsingError):
        return make_error(K.MALFORMED_RESPONSE, f"ParsingError: {exc.cause}", secrets=secrets)
    if not isinstance(exc, ApiError):
        return other_error(exc, secrets)
    body = body_error(exc.body)
    status = int(exc.status_code or 0)
    message = str(body.get("message", "")) or (exc.body if isinstance(exc.body, str) else "")[:200]
    kind = _refine(class_kind(exc) or kind_for_status(status), status, message)
    return make_error(
        kind,
        f"{status} {type(exc).__name__}: {message}",
        secrets=secrets,
        status_code=status or None,
        retry_after=retry_after_s(exc.headers),
        request_id=str(body.get("id", "") or ""),
    )


def _refine(kind: FailureKind, status: int, message: str) -> FailureKind:
    text = message.lower()
    # Cohere answers a prompt over the model's window with a 400 "too many tokens: ...".
    if kind is K.INVALID_REQUEST and ("too many tokens" in text or "context length" in text):
        return K.CONTEXT_TOO_LONG
    # A trial key's monthly allowance is a 429 too; waiting a minute does not help.
    if status == 402 or (kind is K.RATE_LIMITED and "calls / month" in text):
        return K.QUOTA_EXHAUSTED
    return kind


class CohereAdapter(SdkAdapter[Any]):
    """Streams v2 chat through `cohere.AsyncClientV2` on the gateway's HTTP client."""

    translator = EventTranslator

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        cohere_skips.install()
        self._http = http_client(config.transport, httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s))
        self._client = cohere.AsyncClientV2(
            api_key=config.api_key or "unset",
            base_url=config.base_url,
            max_retries=0,
            httpx_client=self._http,
            log_warning_experimental_features=False,
        )

    async def _open(self, request: ChatRequest, model: str) -> Upstream[Any]:
        params = convert(lambda: build_params(request, model))
        opened = contextlib.AsyncExitStack()
        try:
            # An error status raises here, inside the SDK's context, which closes that response itself.
            response = await opened.enter_async_context(self._client.with_raw_response.chat_stream(**params))
        except BaseException:
            await asyncio.shield(opened.aclose())
            raise
        sdk_events: AsyncIterator[Any] = response.data
        checked = cohere_skips.watched(sdk_events)

        async def close() -> None:
            for events in (upstream.chunks, checked, sdk_events):  # the generators, then the HTTP response
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            await opened.aclose()

        upstream: Upstream[Any] = Upstream(checked, close)
        upstream.chunks = self._noting_id(checked, upstream)
        return upstream

    async def _noting_id(self, events: AsyncIterator[Any], upstream: Upstream[Any]) -> AsyncIterator[Any]:
        """The events, giving the attempt the generation id of message-start as they pass: Cohere names the
        request in the body only, and a failure after it (a dropped connection) should carry it too."""
        async for event in events:
            if event.type == "message-start" and not upstream.request_id and isinstance(event.id, str):
                upstream.request_id = scrub_id(event.id, (self.config.api_key,))
            yield event

    def _map_error(self, exc: Exception) -> ProviderError:
        return map_error(exc, (self.config.api_key,))

    async def aclose(self) -> None:
        await self._http.aclose()


def http_client(settings: TransportSettings, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The SDK's own httpx client class for the configured stack, with the gateway's settings and hooks."""
    options = client_options(settings)
    limits = options["limits"]  # httpx2's; the same three numbers in httpx's type
    options["limits"] = httpx.Limits(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
    )
    make = cohere.DefaultAioHttpClient if settings.aiohttp else cohere.DefaultAsyncHttpxClient
    client: httpx.AsyncClient = make(timeout=timeout, **options)
    return client
