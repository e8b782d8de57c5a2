"""OpenAI Chat Completions adapter; also every OpenAI-compatible server (type openai_compatible).

All failures are classified in `map_error`: what failed below the SDK first
(`transport_failure`), then by SDK exception class (the `CLASS_KINDS` table, checked by a
test against every class the SDK defines), then refined by what the error body says
(insufficient_quota, context_length_exceeded).
"""

from __future__ import annotations

import httpx2
import openai
from openai.types.chat import ChatCompletion

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest
from gateway_service.health import retry_after_s
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.classify import (
    body_error,
    kind_for_status,
    make_error,
    nearest_named_kind,
    other_error,
    transport_failure,
)
from gateway_service.providers.http import TransportSettings, client_options
from gateway_service.providers.openai_convert import ChunkTranslator, build_params
from gateway_service.providers.streaming import SdkAdapter, Upstream, convert

# Every class the SDK defines, by name (the table test enforces it; names, so that the classes the SDK
# keeps in private modules need no private import). Lookup walks the MRO only so that a class a newer
# SDK adds is treated like its base until the test flags it. None: decided by the HTTP status.
CLASS_KINDS: dict[str, FailureKind | None] = {
    "BadRequestError": FailureKind.INVALID_REQUEST,
    "AuthenticationError": FailureKind.AUTH_FAILED,
    "OAuthError": FailureKind.AUTH_FAILED,
    "PermissionDeniedError": FailureKind.AUTH_FAILED,
    "NotFoundError": FailureKind.AUTH_FAILED,  # unknown model/endpoint: misconfigured provider
    "ConflictError": FailureKind.SERVER_ERROR,
    "UnprocessableEntityError": FailureKind.INVALID_REQUEST,
    "RateLimitError": FailureKind.RATE_LIMITED,
    "InternalServerError": None,  # 500 server error, 503/529 overloaded
    "APIStatusError": None,
    "APITimeoutError": FailureKind.TIMEOUT,
    "APIConnectionError": FailureKind.CONNECTION_ERROR,
    "APIResponseValidationError": FailureKind.MALFORMED_RESPONSE,
    "APIError": FailureKind.SERVER_ERROR,  # an error object inside a 200 stream; refined by its body
    "LengthFinishReasonError": FailureKind.MALFORMED_RESPONSE,
    "ContentFilterFinishReasonError": FailureKind.CONTENT_FILTERED,
    "SubjectTokenProviderError": FailureKind.AUTH_FAILED,
    "WebSocketConnectionClosedError": FailureKind.CONNECTION_ERROR,
    "WebSocketQueueFullError": FailureKind.OVERLOADED,
    "OpenAIError": FailureKind.AUTH_FAILED,  # raised bare for missing credentials
    "MutuallyExclusiveAuthError": FailureKind.AUTH_FAILED,
    "StreamAlreadyConsumed": FailureKind.MALFORMED_RESPONSE,
    # The adapter misusing the SDK: a gateway bug, not the caller's; the next candidate may still answer.
    "_AmbiguousModuleClientUsageError": FailureKind.SERVER_ERROR,
    "APIRemovedInV1": FailureKind.SERVER_ERROR,
}

# Error codes/types in the body that say more than the status does.
_BODY_KINDS = {
    "insufficient_quota": FailureKind.QUOTA_EXHAUSTED,
    "billing_hard_limit_reached": FailureKind.QUOTA_EXHAUSTED,
    "context_length_exceeded": FailureKind.CONTEXT_TOO_LONG,
    "string_above_max_length": FailureKind.CONTEXT_TOO_LONG,
    "content_filter": FailureKind.CONTENT_FILTERED,
    "content_policy_violation": FailureKind.CONTENT_FILTERED,
    "rate_limit_exceeded": FailureKind.RATE_LIMITED,
    "invalid_api_key": FailureKind.AUTH_FAILED,
    "overloaded": FailureKind.OVERLOADED,
}


def class_kind(exc: BaseException) -> FailureKind | None:
    """The kind the exception's class maps to; raises KeyError for a class missing from the table."""
    kind = nearest_named_kind(exc, CLASS_KINDS)
    if kind is None and isinstance(exc, openai.APIStatusError):
        return kind_for_status(exc.status_code)
    return kind


def map_error(exc: Exception, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """The single place where anything the OpenAI SDK or its transport raises becomes a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    below = transport_failure(exc, secrets)
    if below is not None:
        return below
    if not isinstance(exc, openai.OpenAIError):
        return other_error(exc, secrets)
    kind = class_kind(exc) or FailureKind.SERVER_ERROR
    status: int | None = None
    retry: float | None = None
    request_id = ""
    if isinstance(exc, openai.APIError):
        kind = _refine(kind, getattr(exc, "body", None))
    if isinstance(exc, openai.APIStatusError):
        status, request_id = exc.status_code, exc.request_id or ""
        retry = retry_after_s(exc.response.headers)
    return make_error(kind, str(exc), secrets=secrets, status_code=status, retry_after=retry, request_id=request_id)


def _refine(kind: FailureKind, body: object) -> FailureKind:
    error = body_error(body)
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value in _BODY_KINDS:
            return _BODY_KINDS[value]
    message = str(error.get("message", ""))
    if kind is FailureKind.INVALID_REQUEST and "maximum context length" in message:
        return FailureKind.CONTEXT_TOO_LONG
    return kind


class OpenAIAdapter(SdkAdapter[object]):
    """Streams Chat Completions through the `openai` SDK with SDK retries off."""

    translator = ChunkTranslator

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._compatible = config.type == "openai_compatible"
        timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        # An empty key still sends a request, so a missing key shows up as the upstream's 401.
        self._client = openai.AsyncOpenAI(
            api_key=config.api_key or "",
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=http_client(config.transport),
        )

    async def _open(self, request: ChatRequest, model: str) -> Upstream[object]:
        params = convert(
            lambda: build_params(request, model, compatible=self._compatible, stream_options=self.config.stream_options)
        )
        params.update(params.pop("extra_body", None) or {})  # as `create(extra_body=...)` merges it
        # The request `chat.completions.create(**params)` sends, through the client's documented way to
        # post a body as is (docs/performance.md), without create's first step: re-walking
        # ~40 parameters against the SDK's TypedDicts to apply aliases and formats that no chat
        # completions parameter has (about 0.2 ms a request, before the request leaves, and twice on a
        # failover). build_params already yields the wire JSON; test_openai_body.py checks the two agree.
        stream = await self._client.post(
            "/chat/completions",
            body=params,
            cast_to=ChatCompletion,
            stream=True,
            # Chunks as decoded JSON: the SDK still reads the SSE, parses it and raises its errors
            # (an `error` object in the stream included); only the per-chunk model is left out.
            stream_cls=openai.AsyncStream[object],
        )
        return Upstream(stream, stream.close, stream.response.headers.get("x-request-id", ""))

    def _map_error(self, exc: Exception) -> ProviderError:
        return map_error(exc, (self.config.api_key,))

    async def aclose(self) -> None:
        await self._client.close()


def http_client(settings: TransportSettings) -> httpx2.AsyncClient:
    """The SDK's own client class for the configured stack (its defaults: redirects followed, ...)."""
    make = openai.DefaultAioHttpClient if settings.aiohttp else openai.DefaultAsyncHttpxClient
    return make(**client_options(settings))
