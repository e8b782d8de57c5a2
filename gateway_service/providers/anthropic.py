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

from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import httpx2
from anthropic._response import StreamAlreadyConsumed
from anthropic.lib._extras._common import MissingDependencyError
from anthropic.lib.credentials._workload import WorkloadIdentityError
from anthropic.lib.foundry import MutuallyExclusiveAuthError
from anthropic.lib.tools._toolsets._errors import ToolsetUsageError
from anthropic.types.beta_cmek_not_approved_error import BetaCMEKNotApprovedError
from anthropic.types.beta_external_key_not_found_error import BetaExternalKeyNotFoundError
from anthropic.types.beta_external_key_provider_mismatch_error import BetaExternalKeyProviderMismatchError
from anthropic.types.beta_gcp_project_controlled_by_another_organization_error import (
    BetaGCPProjectControlledByAnotherOrganizationError,
)
from anthropic.types.beta_gcp_project_not_verified_error import BetaGCPProjectNotVerifiedError
from anthropic.types.beta_region_not_supported_error import BetaRegionNotSupportedError
from anthropic.types.beta_request_body_timeout_error import BetaRequestBodyTimeoutError
from anthropic.types.beta_storage_not_approved_error import BetaStorageNotApprovedError
from anthropic.types.file_expired_error import FileExpiredError
from anthropic.types.thread_not_found_error import ThreadNotFoundError

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, ProviderEvent
from gateway_service.providers.anthropic_convert import EventTranslator, build_params
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.errors import (
    body_error,
    classify_transport,
    kind_for_status,
    make_error,
    nearest_kind,
    retry_after_s,
)
from gateway_service.providers.streaming import Pacer, Upstream, convert, drive
from gateway_service.providers.transport import http_client

K = FailureKind
# None: decided by the body's error.type, else by the HTTP status.
CLASS_KINDS: dict[type[BaseException], FailureKind | None] = {
    anthropic.APIStatusError: None,
    anthropic.BadRequestError: K.INVALID_REQUEST,
    anthropic.AuthenticationError: K.AUTH_FAILED,
    anthropic.PaymentRequiredError: K.QUOTA_EXHAUSTED,  # 402 billing_error
    anthropic.PermissionDeniedError: K.AUTH_FAILED,
    anthropic.NotFoundError: K.AUTH_FAILED,  # unknown model: misconfigured provider
    anthropic.RequestTimeoutError: K.TIMEOUT,
    anthropic.ConflictError: K.SERVER_ERROR,
    anthropic.PreconditionFailedError: K.INVALID_REQUEST,
    anthropic.ContentTooLargeError: K.CONTEXT_TOO_LONG,  # 413 request_too_large
    anthropic.UnprocessableEntityError: K.INVALID_REQUEST,
    anthropic.RateLimitError: K.RATE_LIMITED,
    anthropic.RampLimitExceededError: K.RATE_LIMITED,
    anthropic.ContractSpendLimitReachedError: K.QUOTA_EXHAUSTED,
    anthropic.EnforcedSpendLimitReachedError: K.QUOTA_EXHAUSTED,
    anthropic.RequestHeaderFieldsTooLargeError: K.INVALID_REQUEST,
    anthropic.ClientClosedRequestError: K.CONNECTION_ERROR,
    anthropic.InternalServerError: K.SERVER_ERROR,
    anthropic.HTTPNotImplementedError: K.SERVER_ERROR,
    anthropic.ServiceUnavailableError: K.OVERLOADED,
    anthropic.GatewayTimeoutError: K.TIMEOUT,
    anthropic.OverloadedError: K.OVERLOADED,  # 529
    # The account or workspace cannot use this key at all: flag the provider like an auth failure.
    anthropic.OrganizationOnHoldError: K.AUTH_FAILED,
    anthropic.CMEKKeyDisabledError: K.AUTH_FAILED,
    anthropic.CMEKKeyNetworkBlockedError: K.AUTH_FAILED,
    anthropic.ClaudeCodeKeyCreatorNotMemberError: K.AUTH_FAILED,
    anthropic.ParentOrganizationRequiredError: K.AUTH_FAILED,
    anthropic.OrganizationTypeNotSupportedError: K.AUTH_FAILED,
    BetaCMEKNotApprovedError: K.AUTH_FAILED,
    BetaExternalKeyNotFoundError: K.AUTH_FAILED,
    BetaExternalKeyProviderMismatchError: K.AUTH_FAILED,
    BetaGCPProjectControlledByAnotherOrganizationError: K.AUTH_FAILED,
    BetaGCPProjectNotVerifiedError: K.AUTH_FAILED,
    BetaRegionNotSupportedError: K.AUTH_FAILED,
    BetaStorageNotApprovedError: K.AUTH_FAILED,
    # A 400 for a body that arrived too slowly, and 404s for things the request named that are gone.
    BetaRequestBodyTimeoutError: K.TIMEOUT,
    FileExpiredError: K.INVALID_REQUEST,
    ThreadNotFoundError: K.INVALID_REQUEST,
    anthropic.APIConnectionError: K.CONNECTION_ERROR,
    anthropic.APITimeoutError: K.TIMEOUT,
    anthropic.APIResponseValidationError: K.MALFORMED_RESPONSE,
    anthropic.APIWebhookValidationError: K.MALFORMED_RESPONSE,
    anthropic.APIError: None,
    anthropic.RetryableError: K.SERVER_ERROR,
    anthropic.CredentialsError: K.AUTH_FAILED,
    WorkloadIdentityError: K.AUTH_FAILED,
    StreamAlreadyConsumed: K.MALFORMED_RESPONSE,
    # The adapter misusing the SDK: a gateway bug, not the caller's; the next candidate may still answer.
    ToolsetUsageError: K.SERVER_ERROR,
    MissingDependencyError: K.SERVER_ERROR,
    MutuallyExclusiveAuthError: K.AUTH_FAILED,
    anthropic.AnthropicError: K.AUTH_FAILED,  # raised bare for client set-up problems such as missing auth
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
    return nearest_kind(exc, CLASS_KINDS)


def map_error(exc: Exception, secrets: tuple[str | None, ...] = ()) -> ProviderError:
    """The single place where anything the Anthropic SDK or its transport raises becomes a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if not isinstance(exc, anthropic.AnthropicError):
        kind = classify_transport(exc) or K.MALFORMED_RESPONSE
        return make_error(kind, f"{type(exc).__name__}: {exc}", secrets=secrets)
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
        return make_error(kind, text, secrets=secrets, status_code=status if status >= 400 else None,
                          retry_after=retry_after_s(exc.response.headers), request_id=exc.request_id or "")
    return make_error(kind, text, secrets=secrets)


def _refine(kind: FailureKind, message: str) -> FailureKind:
    # Anthropic reports both of these as a plain 400 invalid_request_error; only the wording tells.
    if kind is K.INVALID_REQUEST and "prompt is too long" in message:
        return K.CONTEXT_TOO_LONG
    if kind is K.INVALID_REQUEST and "credit balance is too low" in message:
        return K.QUOTA_EXHAUSTED
    return kind


class AnthropicAdapter:
    """Streams Messages through the `anthropic` SDK with SDK retries off."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key or "", base_url=config.base_url, max_retries=0, timeout=timeout,
            http_client=http_client(config, follow_redirects=True),  # as the SDK's own default client
        )  # fmt: skip

    def stream(self, request: ChatRequest, model: str, *, deadline_s: float) -> AsyncGenerator[ProviderEvent, None]:
        pacer = Pacer(self.config, deadline_s)
        return drive(lambda: self._open(request, model), _translator, pacer, self._map_error)

    async def _open(self, request: ChatRequest, model: str) -> Upstream[Any]:
        params = convert(lambda: build_params(request, model, effort_based=model in self.config.effort_models))
        stream = await self._client.messages.create(**params)
        return Upstream(stream.__aiter__(), stream.close, stream.response.headers.get("request-id", ""))

    def _map_error(self, exc: Exception) -> ProviderError:
        return map_error(exc, (self.config.api_key,))

    async def aclose(self) -> None:
        await self._client.close()


def _translator(upstream: Upstream[Any]) -> EventTranslator:
    return EventTranslator(upstream.request_id)
