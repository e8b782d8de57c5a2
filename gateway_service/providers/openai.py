"""OpenAI Chat Completions adapter; also every OpenAI-compatible server (type openai_compatible).

All failures are classified in `map_error`: first by SDK exception class (the
`CLASS_KINDS` table, checked by a test against every class the SDK defines), then
refined by what the error body says (insufficient_quota, context_length_exceeded).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx2
import openai
from openai import _AmbiguousModuleClientUsageError
from openai._exceptions import SubjectTokenProviderError  # not re-exported at the top level
from openai._response import StreamAlreadyConsumed
from openai._types import RequestOptions
from openai.lib._old_api import APIRemovedInV1
from openai.lib.azure import MutuallyExclusiveAuthError
from openai.types.chat import ChatCompletion

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, ProviderEvent
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.errors import (
    body_error,
    classify_transport,
    kind_for_status,
    make_error,
    nearest_kind,
    retry_after_s,
)
from gateway_service.providers.openai_convert import ChunkTranslator, build_params
from gateway_service.providers.streaming import Pacer, Upstream, convert, drive
from gateway_service.providers.transport import http_client

# Every class the SDK defines (the table test enforces it). Lookup walks the MRO only so that a class
# a newer SDK adds is treated like its base until the test flags it. None: decided by the HTTP status.
CLASS_KINDS: dict[type[BaseException], FailureKind | None] = {
    openai.BadRequestError: FailureKind.INVALID_REQUEST,
    openai.AuthenticationError: FailureKind.AUTH_FAILED,
    openai.OAuthError: FailureKind.AUTH_FAILED,
    openai.PermissionDeniedError: FailureKind.AUTH_FAILED,
    openai.NotFoundError: FailureKind.AUTH_FAILED,  # unknown model/endpoint: misconfigured provider
    openai.ConflictError: FailureKind.SERVER_ERROR,
    openai.UnprocessableEntityError: FailureKind.INVALID_REQUEST,
    openai.RateLimitError: FailureKind.RATE_LIMITED,
    openai.InternalServerError: None,  # 500 server error, 503/529 overloaded
    openai.APIStatusError: None,
    openai.APITimeoutError: FailureKind.TIMEOUT,
    openai.APIConnectionError: FailureKind.CONNECTION_ERROR,
    openai.APIResponseValidationError: FailureKind.MALFORMED_RESPONSE,
    openai.APIError: FailureKind.SERVER_ERROR,  # an error object inside a 200 stream; refined by its body
    openai.LengthFinishReasonError: FailureKind.MALFORMED_RESPONSE,
    openai.ContentFilterFinishReasonError: FailureKind.CONTENT_FILTERED,
    SubjectTokenProviderError: FailureKind.AUTH_FAILED,
    openai.WebSocketConnectionClosedError: FailureKind.CONNECTION_ERROR,
    openai.WebSocketQueueFullError: FailureKind.OVERLOADED,
    openai.OpenAIError: FailureKind.AUTH_FAILED,  # raised bare for missing credentials
    MutuallyExclusiveAuthError: FailureKind.AUTH_FAILED,
    StreamAlreadyConsumed: FailureKind.MALFORMED_RESPONSE,
    # The adapter misusing the SDK: a gateway bug, not the caller's; the next candidate may still answer.
    _AmbiguousModuleClientUsageError: FailureKind.SERVER_ERROR,
    APIRemovedInV1: FailureKind.SERVER_ERROR,
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
    kind = nearest_kind(exc, CLASS_KINDS)
    if kind is None and isinstance(exc, openai.APIStatusError):
        return kind_for_status(exc.status_code)
    return kind


def map_error(exc: Exception, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """The single place where anything the OpenAI SDK or its transport raises becomes a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if not isinstance(exc, openai.OpenAIError):
        kind = classify_transport(exc) or FailureKind.MALFORMED_RESPONSE
        return make_error(kind, f"{type(exc).__name__}: {exc}", secrets=secrets)
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


class OpenAIAdapter:
    """Streams Chat Completions through the `openai` SDK with SDK retries off."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._compatible = config.type == "openai_compatible"
        timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        # An empty key still sends a request, so a missing key shows up as the upstream's 401.
        self._client = openai.AsyncOpenAI(
            api_key=config.api_key or "", base_url=config.base_url, max_retries=0, timeout=timeout,
            http_client=http_client(config, follow_redirects=True),  # as the SDK's own default client
        )  # fmt: skip

    def stream(self, request: ChatRequest, model: str, *, deadline_s: float) -> AsyncGenerator[ProviderEvent, None]:
        pacer = Pacer(self.config, deadline_s)
        return drive(lambda: self._open(request, model), _translator, pacer, self._map_error)

    async def _open(self, request: ChatRequest, model: str) -> Upstream[object]:
        params = convert(lambda: build_params(request, model, compatible=self._compatible))
        options: RequestOptions = {"security": {"bearer_auth": True}}
        extra = params.pop("extra_body", None)
        if extra:  # as `create(extra_body=...)` does: merged into the JSON body by the SDK
            options["extra_json"] = extra
        # The request `chat.completions.create(**params)` sends, without its first step: re-walking
        # ~40 parameters against the SDK's TypedDicts to apply aliases and formats that no chat
        # completions parameter has (about 0.2 ms a request, before the request leaves, and twice on a
        # failover). build_params already yields the wire JSON; test_openai_body.py checks the two agree.
        stream = await self._client.post(
            "/chat/completions",
            body=params,
            cast_to=ChatCompletion,
            options=options,
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


def _translator(upstream: Upstream[object]) -> ChunkTranslator:
    return ChunkTranslator(upstream.request_id)
