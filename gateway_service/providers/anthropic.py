"""Anthropic Messages adapter on the `anthropic` SDK.

All failures are classified in `map_error`. The SDK defines one exception class per
HTTP status plus many subclasses named for an `error_code` (most belong to the
admin and beta APIs); `CLASS_KINDS` lists the status classes and every subclass
whose meaning differs from its status, and the table test pins the kind of every
class the SDK defines, so a new SDK class fails the test until someone decides.
An `event: error` inside a 200 stream arrives as a bare APIStatusError (status
200) and is classified by its `error.type`.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest
from gateway_service.health import retry_after_s
from gateway_service.providers.anthropic_convert import EventTranslator, build_params
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
from gateway_service.providers.streaming import SdkAdapter, Upstream, convert

K = FailureKind
# By class name (several classes live in private modules). None: decided by the body's error.type, else
# by the HTTP status.
CLASS_KINDS: dict[str, FailureKind | None] = {
    "APIStatusError": None,
    "BadRequestError": K.INVALID_REQUEST,
    "AuthenticationError": K.AUTH_FAILED,
    "PaymentRequiredError": K.QUOTA_EXHAUSTED,  # 402 billing_error
    "PermissionDeniedError": K.AUTH_FAILED,
    "NotFoundError": K.AUTH_FAILED,  # unknown model: misconfigured provider
    "RequestTimeoutError": K.TIMEOUT,
    "ConflictError": K.SERVER_ERROR,
    "PreconditionFailedError": K.INVALID_REQUEST,
    "ContentTooLargeError": K.CONTEXT_TOO_LONG,  # 413 request_too_large
    "UnprocessableEntityError": K.INVALID_REQUEST,
    "RateLimitError": K.RATE_LIMITED,
    "RampLimitExceededError": K.RATE_LIMITED,
    "ContractSpendLimitReachedError": K.QUOTA_EXHAUSTED,
    "EnforcedSpendLimitReachedError": K.QUOTA_EXHAUSTED,
    "RequestHeaderFieldsTooLargeError": K.INVALID_REQUEST,
    "ClientClosedRequestError": K.CONNECTION_ERROR,
    "InternalServerError": K.SERVER_ERROR,
    "HTTPNotImplementedError": K.SERVER_ERROR,
    "ServiceUnavailableError": K.OVERLOADED,
    "GatewayTimeoutError": K.TIMEOUT,
    "OverloadedError": K.OVERLOADED,  # 529
    # The account or workspace cannot use this key at all: flag the provider like an auth failure.
    "OrganizationOnHoldError": K.AUTH_FAILED,
    "CMEKKeyDisabledError": K.AUTH_FAILED,
    "CMEKKeyNetworkBlockedError": K.AUTH_FAILED,
    "ClaudeCodeKeyCreatorNotMemberError": K.AUTH_FAILED,
    "ParentOrganizationRequiredError": K.AUTH_FAILED,
    "OrganizationTypeNotSupportedError": K.AUTH_FAILED,
    "BetaCMEKNotApprovedError": K.AUTH_FAILED,
    "BetaExternalKeyNotFoundError": K.AUTH_FAILED,
    "BetaExternalKeyProviderMismatchError": K.AUTH_FAILED,
    "BetaGCPProjectControlledByAnotherOrganizationError": K.AUTH_FAILED,
    "BetaGCPProjectNotVerifiedError": K.AUTH_FAILED,
    "BetaRegionNotSupportedError": K.AUTH_FAILED,
    "BetaStorageNotApprovedError": K.AUTH_FAILED,
    # A 400 for a body that arrived too slowly, and 404s for things the request named that are gone.
    "BetaRequestBodyTimeoutError": K.TIMEOUT,
    "FileExpiredError": K.INVALID_REQUEST,
    "ThreadNotFoundError": K.INVALID_REQUEST,
    "APIConnectionError": K.CONNECTION_ERROR,
    "APITimeoutError": K.TIMEOUT,
    "APIResponseValidationError": K.MALFORMED_RESPONSE,
    "APIWebhookValidationError": K.MALFORMED_RESPONSE,
    "APIError": None,
    "RetryableError": K.SERVER_ERROR,
    "CredentialsError": K.AUTH_FAILED,
    "WorkloadIdentityError": K.AUTH_FAILED,
    "StreamAlreadyConsumed": K.MALFORMED_RESPONSE,
    # The adapter misusing the SDK: a gateway bug, not the caller's; the next candidate may still answer.
    "ToolsetUsageError": K.SERVER_ERROR,
    "MissingDependencyError": K.SERVER_ERROR,
    "MutuallyExclusiveAuthError": K.AUTH_FAILED,
    "AnthropicError": K.AUTH_FAILED,  # raised bare for client set-up problems such as missing auth
}

# `error.type` values (https://docs.anthropic.com/en/api/errors), for errors inside a 200 stream.
ERROR_TYPES = {
    "invalid_request_error": K.INVALID_REQUEST,
    "authentication_error": K.AUTH_FAILED,
    "permission_error": K.AUTH_FAILED,
    "not_found_error": K.AUTH_FAILED,
    "billing_error": K.QUOTA_EXHAUSTED,
    "request_too_large": K.CONTEXT_TOO_LONG,
    "rate_limit_error": K.RATE_LIMITED,
    "timeout_error": K.TIMEOUT,
    "api_error": K.SERVER_ERROR,
    "overloaded_error": K.OVERLOADED,
}


def class_kind(exc: BaseException) -> FailureKind | None:
    """Kind from the nearest class in CLASS_KINDS; None when the body or status decides."""
    return nearest_named_kind(exc, CLASS_KINDS)


def map_error(exc: Exception, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """The single place where anything the Anthropic SDK or its transport raises becomes a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    below = transport_failure(exc, secrets)
    if below is not None:
        return below
    if not isinstance(exc, anthropic.AnthropicError):
        return other_error(exc, secrets)
    error = body_error(getattr(exc, "body", None))
    status = int(getattr(exc, "status_code", 0) or 0)
    by_class = class_kind(exc)
    if by_class is None:
        by_type = ERROR_TYPES.get(str(error.get("type", "")))
        by_class = by_type or (kind_for_status(status) if status >= 400 else K.SERVER_ERROR)
    message = str(error.get("message", "")) or str(exc)
    kind = _refine(by_class, message)
    text = f"{status if status >= 400 else 'stream'} {error.get('type', type(exc).__name__)}: {message}"
    if isinstance(exc, anthropic.APIStatusError):
        return make_error(
            kind,
            text,
            secrets=secrets,
            status_code=status if status >= 400 else None,
            retry_after=retry_after_s(exc.response.headers),
            request_id=exc.request_id or "",
        )
    return make_error(kind, text, secrets=secrets)


def _refine(kind: FailureKind, message: str) -> FailureKind:
    # Anthropic reports both of these as a plain 400 invalid_request_error; only the wording tells.
    if kind is K.INVALID_REQUEST and "prompt is too long" in message:
        return K.CONTEXT_TOO_LONG
    if kind is K.INVALID_REQUEST and "credit balance is too low" in message:
        return K.QUOTA_EXHAUSTED
    return kind


class AnthropicAdapter(SdkAdapter[Any]):
    """Streams Messages through the `anthropic` SDK with SDK retries off."""

    translator = EventTranslator

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key or "",
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=http_client(config.transport),
        )

    async def _open(self, request: ChatRequest, model: str) -> Upstream[Any]:
        params = convert(lambda: build_params(request, model, effort_based=model in self.config.effort_models))
        stream = await self._client.messages.create(**params)
        return Upstream(stream.__aiter__(), stream.close, stream.response.headers.get("request-id", ""))

    def _map_error(self, exc: Exception) -> ProviderError:
        return map_error(exc, (self.config.api_key,))

    async def aclose(self) -> None:
        await self._client.close()


def http_client(settings: TransportSettings) -> httpx2.AsyncClient:
    """The SDK's own client class for the configured stack (its defaults: redirects followed, ...)."""
    make = anthropic.DefaultAioHttpClient if settings.aiohttp else anthropic.DefaultAsyncHttpxClient
    return make(**client_options(settings))
