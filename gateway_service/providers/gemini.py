"""Gemini adapter on the `google-genai` SDK (Gemini API with an API key).

base_url and api_version come from ProviderConfig through HttpOptions; SDK
retries are off (HttpRetryOptions(attempts=1)) and automatic function calling
is disabled. All failures are classified in `map_error`: google-genai raises
ClientError / ServerError carrying the HTTP code and the JSON error body, whose
`details` hold the retry delay (google.rpc.RetryInfo.retryDelay) of a 429.

google-genai nests several async generators around the HTTP response and does
not close them explicitly, so the adapter gives the SDK its own httpx2 client (aiohttp-backed, from
httpx-aiohttp, unless `http_client: httpx`)
whose response hook hands each streaming response back to the attempt that
opened it; closing the attempt closes that response at once.

google-genai applies one per-request timeout to every phase (HttpOptions.timeout, also sent as
X-Server-Timeout); a request hook on the adapter's own httpx2 client narrows the connect and pool
phases of each request to connect_timeout_s, so an unreachable upstream fails over after that
rather than after the first-token budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from httpx_aiohttp.httpx2 import Httpx2AiohttpClient

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.classify import (
    body_error,
    kind_for_status,
    make_error,
    nearest_kind,
    other_error,
    transport_failure,
)
from gateway_service.providers.gemini_convert import ResponseTranslator, build_config, build_contents
from gateway_service.providers.http import RequestHook, ResponseHook, TransportSettings, client_options
from gateway_service.providers.streaming import SdkAdapter, Upstream, convert

K = FailureKind
# None: decided by the HTTP code and the error body.
CLASS_KINDS: dict[type[BaseException], FailureKind | None] = {
    genai_errors.APIError: None,
    genai_errors.ClientError: None,
    genai_errors.ServerError: None,
    genai_errors.UnknownApiResponseError: K.MALFORMED_RESPONSE,
    # Raised by automatic function calling, which the adapter turns off; a request problem if ever seen.
    genai_errors.UnknownFunctionCallArgumentError: K.INVALID_REQUEST,
    genai_errors.UnsupportedFunctionError: K.INVALID_REQUEST,
    genai_errors.FunctionInvocationError: K.INVALID_REQUEST,
    genai_errors.ContinuationInterruptedError: K.CONNECTION_ERROR,
}

_DELAY = re.compile(r"^\s*([0-9.]+)s\s*$")
_opened: contextvars.ContextVar[list[httpx2.Response] | None] = contextvars.ContextVar("gemini_opened", default=None)


def class_kind(exc: BaseException) -> FailureKind | None:
    """Kind from the nearest class in CLASS_KINDS; None when the code and body decide."""
    return nearest_kind(exc, CLASS_KINDS)


def map_error(exc: Exception, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """The single place where anything google-genai or its transport raises becomes a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    below = transport_failure(exc, secrets)
    if below is not None:
        return below
    if not isinstance(exc, tuple(CLASS_KINDS)):
        return other_error(exc, secrets)
    by_class = class_kind(exc)
    if not isinstance(exc, genai_errors.APIError):
        return make_error(by_class or K.SERVER_ERROR, f"{type(exc).__name__}: {exc}", secrets=secrets)
    error = body_error(exc.details)
    code = int(exc.code or 0)
    kind = _refine(by_class or kind_for_status(code), error)
    message = f"{code} {exc.status or ''}: {exc.message or exc}"
    return make_error(kind, message, secrets=secrets, status_code=code or None, retry_after=retry_delay(error))


def _refine(kind: FailureKind, error: Any) -> FailureKind:
    message = str(error.get("message", ""))
    reasons = {str(d.get("reason", "")) for d in error.get("details") or [] if isinstance(d, dict)}
    # The Gemini API answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
    if "API_KEY_INVALID" in reasons or "API key not valid" in message:
        return K.AUTH_FAILED
    if kind is K.INVALID_REQUEST and "input token count" in message and "exceeds the maximum" in message:
        return K.CONTEXT_TOO_LONG
    if kind is K.RATE_LIMITED and "credits are depleted" in message:
        return K.QUOTA_EXHAUSTED
    return kind


def retry_delay(error: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("retryDelay": "2s" or "1.500s")."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


async def _close_all(responses: list[httpx2.Response]) -> None:
    for response in responses:
        await response.aclose()


async def _capture(response: httpx2.Response) -> None:
    opened = _opened.get()
    if opened is not None:
        opened.append(response)


def _connect_within(seconds: float) -> Callable[[httpx2.Request], Awaitable[None]]:
    """A request hook bounding the connect and pool phases, which the SDK's one timeout covers."""

    async def hook(request: httpx2.Request) -> None:
        timeout = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "pool"):
            current = timeout.get(phase)
            timeout[phase] = seconds if current is None else min(current, seconds)
        request.extensions["timeout"] = timeout

    return hook


class GeminiAdapter(SdkAdapter[Any]):
    """Streams generateContent through `google-genai` with SDK retries off."""

    translator = ResponseTranslator

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._http = http_client(config.transport, [_connect_within(config.connect_timeout_s)], [_capture])
        options = genai_types.HttpOptions(
            base_url=config.base_url,
            api_version=config.api_version,
            timeout=int(config.timeout_s * 1000),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
            httpx_async_client=self._http,
        )
        self._client = genai.Client(api_key=config.api_key or "unset", http_options=options)

    async def _open(self, request: ChatRequest, model: str) -> Upstream[Any]:
        effort_based = model in self.config.effort_models
        contents, config = convert(lambda: (build_contents(request.messages), build_config(request, effort_based)))
        # The SDK sends the request on the first __anext__, so that read happens here, where the
        # response hook can hand the HTTP response to this attempt.
        opened: list[httpx2.Response] = []
        token = _opened.set(opened)
        try:
            chunks = await self._client.aio.models.generate_content_stream(
                model=model,
                contents=contents,  # type: ignore[arg-type]
                config=config,  # type: ignore[arg-type]
            )
            first = await anext(chunks, None)
        except BaseException:
            # No Upstream yet for drive() to close: close here whatever was opened (timeout, cancellation).
            await asyncio.shield(_close_all(opened))
            raise
        finally:
            _opened.reset(token)

        async def replay() -> AsyncIterator[Any]:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk

        headers = opened[-1].headers if opened else httpx2.Headers()
        return Upstream(replay(), lambda: _close_all(opened), headers.get("x-goog-request-id", ""))

    def _map_error(self, exc: Exception) -> ProviderError:
        return map_error(exc, (self.config.api_key,))

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        await self._http.aclose()
        self._client.close()  # the sync HTTP client the SDK builds alongside, unused but open


def http_client(
    settings: TransportSettings, request_hooks: Sequence[RequestHook] = (), response_hooks: Sequence[ResponseHook] = ()
) -> httpx2.AsyncClient:
    """The httpx2 client google-genai gets (HttpOptions.httpx_async_client): aiohttp-backed, or httpx2's own."""
    make = Httpx2AiohttpClient if settings.aiohttp else httpx2.AsyncClient
    return make(**client_options(settings, request_hooks, response_hooks))
