"""Table tests: every exception class each SDK defines maps to a named FailureKind.

The tables below are the decision, class by class. Each test enumerates the classes the
installed SDK actually defines (walking the subclass tree), so a new SDK class that nobody
has classified fails here instead of silently taking a default. Instances are built the way
the SDKs build them (with an httpx2 response carrying status, headers and an error body).
"""

from __future__ import annotations

import inspect
import json
import ssl
from typing import Any

import aiohttp
import aiohttp.http_exceptions as aiohttp_http
import anthropic
import httpx
import httpx2
import openai
import pytest
from aiohttp.client_reqrep import ConnectionKey
from google.genai import errors as genai_errors
from multidict import CIMultiDict, CIMultiDictProxy
from openai.types.chat import ChatCompletion
from yarl import URL

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.health import retry_after_s
from gateway_service.providers import anthropic as anthropic_adapter
from gateway_service.providers import cohere as cohere_adapter
from gateway_service.providers import gemini as gemini_adapter
from gateway_service.providers import openai as openai_adapter
from gateway_service.providers.classify import AIOHTTP_KINDS, classify_transport
from gateway_service.providers.scrub import REDACTED, scrub

K = FailureKind


def sdk_classes(root: type[BaseException]) -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {root.__name__: root}
    stack = [root]
    while stack:
        for sub in stack.pop().__subclasses__():
            assert found.get(sub.__name__, sub) is sub, f"two classes named {sub.__name__}"
            found[sub.__name__] = sub
            stack.append(sub)
    return found


REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/x")


def response(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, request=REQUEST, headers=headers or {}, json=body if body is not None else {})


def status_of(cls: type[BaseException], table: dict[type[BaseException], int]) -> int:
    return next(table[c] for c in cls.__mro__ if c in table)


def build(cls: type[BaseException], status: int, body: object) -> BaseException:
    """An instance made through the class's own constructor, whatever its signature."""
    params = inspect.signature(cls.__init__).parameters
    values: dict[str, Any] = {
        "message": "boom",
        "response": response(status, body),
        "body": body,
        "request": REQUEST,
        "completion": ChatCompletion.model_construct(usage=None),
        "unsent_messages": [],
        "symbol": "x",
        "library": "x",
        "extra": "x",
        "status_code": status,
        "path": None,
        "action": "add",
        "toolset_name": "x",
    }
    if list(params) == ["self", "args", "kwargs"]:
        return cls("boom")
    positional = [
        values[n]
        for n, p in params.items()
        if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
    ]
    keywords = {n: values[n] for n, p in params.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    return cls(*positional, **keywords)


OPENAI_EXPECTED: dict[str, FailureKind] = {
    "OpenAIError": K.AUTH_FAILED,
    "APIError": K.SERVER_ERROR,
    "APIStatusError": K.INVALID_REQUEST,  # an unlisted 4xx (418 here)
    "BadRequestError": K.INVALID_REQUEST,
    "AuthenticationError": K.AUTH_FAILED,
    "OAuthError": K.AUTH_FAILED,
    "PermissionDeniedError": K.AUTH_FAILED,
    "NotFoundError": K.AUTH_FAILED,
    "ConflictError": K.SERVER_ERROR,
    "UnprocessableEntityError": K.INVALID_REQUEST,
    "RateLimitError": K.RATE_LIMITED,
    "InternalServerError": K.SERVER_ERROR,
    "APIConnectionError": K.CONNECTION_ERROR,
    "APITimeoutError": K.TIMEOUT,
    "APIResponseValidationError": K.MALFORMED_RESPONSE,
    "LengthFinishReasonError": K.MALFORMED_RESPONSE,
    "ContentFilterFinishReasonError": K.CONTENT_FILTERED,
    "SubjectTokenProviderError": K.AUTH_FAILED,
    "WebSocketConnectionClosedError": K.CONNECTION_ERROR,
    "WebSocketQueueFullError": K.OVERLOADED,
    "MutuallyExclusiveAuthError": K.AUTH_FAILED,
    "StreamAlreadyConsumed": K.MALFORMED_RESPONSE,
    "_AmbiguousModuleClientUsageError": K.SERVER_ERROR,
    "APIRemovedInV1": K.SERVER_ERROR,
}
OPENAI_STATUS = {
    openai.BadRequestError: 400,
    openai.AuthenticationError: 401,
    openai.PermissionDeniedError: 403,
    openai.NotFoundError: 404,
    openai.ConflictError: 409,
    openai.UnprocessableEntityError: 422,
    openai.RateLimitError: 429,
    openai.InternalServerError: 500,
    BaseException: 418,
}


def test_openai_every_class_is_classified() -> None:
    classes = sdk_classes(openai.OpenAIError)
    assert set(classes) == set(OPENAI_EXPECTED), "classify the new or removed openai exception classes"
    for name, cls in classes.items():
        assert name in openai_adapter.CLASS_KINDS, f"{name} missing from the adapter's table"
        error = openai_adapter.map_error(build(cls, status_of(cls, OPENAI_STATUS), {"message": "boom"}))
        assert error.kind is OPENAI_EXPECTED[name], name


ANTHROPIC_EXPECTED: dict[str, list[str]] = {
    "CONNECTION_ERROR": [
        "APIConnectionError",
        "ClientClosedRequestError",
    ],
    "BY_BODY": [
        "APIError",
        "APIStatusError",
    ],
    "MALFORMED_RESPONSE": [
        "APIResponseValidationError",
        "APIWebhookValidationError",
        "StreamAlreadyConsumed",
    ],
    "TIMEOUT": [
        "APITimeoutError",
        "BetaRequestBodyTimeoutError",
        "GatewayTimeoutError",
        "RequestTimeoutError",
    ],
    "INVALID_REQUEST": [
        "AlreadyMemberError",
        "AvailableToolsLimitExceededError",
        "BadRequestError",
        "BetaApprovalRequiredError",
        "BetaBundleAttachmentNotSupportedError",
        "BetaBundleOnCallError",
        "BetaCMEKFeatureUnsupportedError",
        "BetaCannotSignOutPrimaryOwnerError",
        "BetaCannotSignOutSelfError",
        "BetaEnvironmentArchivedError",
        "BetaExternalStorageInUseError",
        "BetaExternalStorageInWorkspacePolicyError",
        "BetaExternalStorageNotAvailableError",
        "BetaGrantRequiredError",
        "BetaHeartbeatPreconditionFailedError",
        "BetaHumanReviewNotAvailableError",
        "BetaHumanReviewOnWithExternalStorageError",
        "BetaInvalidConfigTypeChangeError",
        "BetaInvalidMetadataError",
        "BetaInvalidStorageARNError",
        "BetaOrganizationNotEligibleError",
        "BetaOrganizationNotEnrolledInBetaError",
        "BetaProviderNotAllowedError",
        "BetaRBACGroupOrderLimitExceededError",
        "BetaScanFailedError",
        "BetaSettingsDocumentLimitExceededError",
        "BetaSettingsHistoryLimitExceededError",
        "BetaSlackChannelSetUpSettingsRefusedError",
        "BetaStorageAttachLimitReachedError",
        "BetaStorageNotAttachableError",
        "BetaStorageProfileStillRequiredError",
        "BetaStorageVerificationFailedError",
        "BetaTranscriptsStorageRequiredError",
        "BetaUnsupportedCharsetError",
        "BetaUnsupportedRegionError",
        "CannotInviteEmailsWithUnverifiedDomainsError",
        "CannotRemoveLastMemberError",
        "ClaudeCodeVersionTooOldError",
        "CompactionBlockAmbiguousError",
        "CompactionBlockMisplacedError",
        "CompactionContentMismatchError",
        "CompactionIncompleteTurnError",
        "CompactionNothingToSummarizeError",
        "CompactionSignatureInvalidError",
        "CompactionTooManyToolReferencesError",
        "CompactionToolChangesMismatchError",
        "EmailDomainNotAllowedError",
        "ExternalKeyInWorkspacePolicyError",
        "ExternalKeyValidationFailedError",
        "ExternalKeyValidationTimedOutError",
        "FileExpiredError",
        "FileNotDownloadableError",
        "ImageDimensionsTooLargeError",
        "InviteAlreadyExistsError",
        "KeyProfileMismatchError",
        "OrgAPIKeyLimitExceededError",
        "OrgMemberLimitExceededError",
        "PreconditionFailedError",
        "RBACGroupGrantsOwnerAccessError",
        "RBACGroupOwnerAccessUnconfirmedError",
        "RequestBodyEncodingInvalidError",
        "RequestBodyEncodingUnsupportedError",
        "RequestHeaderFieldsTooLargeError",
        "StorageProfileMismatchError",
        "StorageQuotaExceededError",
        "ThreadAlreadyContinuedError",
        "ThreadContinueInFlightError",
        "ThreadFingerprintMismatchError",
        "ThreadNotFoundError",
        "ThreadUnsupportedRequestError",
        "ToolNameConflictError",
        "ToolReferenceUnresolvedError",
        "UnprocessableEntityError",
        "UserProfileNotFoundError",
        "UserProfileRequiredError",
        "WorkspaceAPIKeyLimitExceededError",
        "WorkspaceHumanReviewDisabledError",
        "WorkspaceMemberLimitExceededError",
        "WorkspacePolicyViolationError",
    ],
    "AUTH_FAILED": [
        "AnthropicError",
        "AuthenticationError",
        "BetaAPIKeyScopeMissingError",
        "BetaCMEKNotApprovedError",
        "BetaExternalKeyNotFoundError",
        "BetaExternalKeyProviderMismatchError",
        "BetaGCPProjectControlledByAnotherOrganizationError",
        "BetaGCPProjectNotVerifiedError",
        "BetaRegionNotSupportedError",
        "BetaStorageNotApprovedError",
        "BetaCannotSignOutManagedMemberError",
        "BetaCannotSignOutMembershipAdminError",
        "BetaCannotSignOutOwnerError",
        "BetaCannotSignOutPrivilegedMemberError",
        "BetaClaudeTagWritesNotEnabledError",
        "BetaComplianceConfigurationRestrictedError",
        "BetaEnvironmentCreateDisabledError",
        "BetaEnvironmentNotFoundError",
        "BetaEnvironmentUpdateDisabledError",
        "BetaOrganizationLevelScopedAPIKeyRequiredError",
        "BetaRBACGroupManagedSettingsNotFoundError",
        "BetaRBACGroupNotFoundError",
        "BetaSlackChannelSetUpEnvironmentNotFoundError",
        "BetaSpendLimitsAdminAPIWritesNotEnabledError",
        "CMEKKeyDisabledError",
        "CMEKKeyNetworkBlockedError",
        "ClaudeCodeKeyCreatorNotMemberError",
        "CredentialsError",
        "IdentityTokenFileError",
        "MutuallyExclusiveAuthError",
        "NotFoundError",
        "OrganizationOnHoldError",
        "OrganizationTypeNotSupportedError",
        "ParentOrganizationRequiredError",
        "PermissionDeniedError",
        "RBACRoleNotFoundError",
        "SandboxEgressRestrictedError",
        "UserProfileBillingNotAuthorizedError",
        "UserProfileNotBillableError",
        "WorkloadIdentityError",
    ],
    "OVERLOADED": [
        "BetaAuthorizationCheckUnavailableError",
        "BetaRegistrationPendingError",
        "CMEKContextUnavailableError",
        "CMEKKeyUnreachableError",
        "ChangeOutcomeUnknownError",
        "CompactionUnavailableError",
        "OverloadedError",
        "ServiceUnavailableError",
        "WorkspaceCreatedIncompleteError",
    ],
    "SERVER_ERROR": [
        "BetaPluginNameTakenError",
        "BetaScanPendingError",
        "BetaSkillNameTakenError",
        "BetaSlackChannelSetUpSettingsConflictError",
        "BetaStorageAlreadyRegisteredError",
        "BetaStorageChangedConcurrentlyError",
        "BetaStorageInUseError",
        "BetaWorkspaceChangedConcurrentlyError",
        "ConcurrentMembershipChangeError",
        "ConflictError",
        "ExternalKeyChangedError",
        "HTTPNotImplementedError",
        "InternalServerError",
        "MissingDependencyError",
        "RetryableError",
        "SkillReadBlockedUndecryptableError",
        "StorageAttachedDuringArchiveError",
        "ToolsetClosedError",
        "ToolsetConfigError",
        "ToolsetContractError",
        "ToolsetUsageError",
        "ToolsetsFixedError",
    ],
    "CONTEXT_TOO_LONG": [
        "ContentTooLargeError",
        "RequestBodyTooLargeAfterDecodingError",
    ],
    "QUOTA_EXHAUSTED": [
        "ContractSpendLimitReachedError",
        "EnforcedSpendLimitReachedError",
        "LinkedOrganizationBillingUnavailableError",
        "LinkedOrganizationSpendLimitReachedError",
        "PaymentRequiredError",
    ],
    "RATE_LIMITED": [
        "RampLimitExceededError",
        "RateLimitError",
    ],
}


ANTHROPIC_STATUS = {
    anthropic.BadRequestError: 400,
    anthropic.AuthenticationError: 401,
    anthropic.PaymentRequiredError: 402,
    anthropic.PermissionDeniedError: 403,
    anthropic.NotFoundError: 404,
    anthropic.RequestTimeoutError: 408,
    anthropic.ConflictError: 409,
    anthropic.PreconditionFailedError: 412,
    anthropic.ContentTooLargeError: 413,
    anthropic.UnprocessableEntityError: 422,
    anthropic.RateLimitError: 429,
    anthropic.RequestHeaderFieldsTooLargeError: 431,
    anthropic.ClientClosedRequestError: 499,
    anthropic.HTTPNotImplementedError: 501,
    anthropic.ServiceUnavailableError: 503,
    anthropic.GatewayTimeoutError: 504,
    anthropic.OverloadedError: 529,
    anthropic.InternalServerError: 500,
    BaseException: 418,
}


def test_the_sdk_tables_name_only_classes_the_sdks_define() -> None:
    """The adapters' tables are keyed by class name (no private imports); a stale name would match nothing."""
    assert set(openai_adapter.CLASS_KINDS) <= set(sdk_classes(openai.OpenAIError))
    assert set(anthropic_adapter.CLASS_KINDS) <= set(sdk_classes(anthropic.AnthropicError))


def test_anthropic_every_class_is_classified() -> None:
    expected = {name: kind for kind, names in ANTHROPIC_EXPECTED.items() for name in names}
    classes = sdk_classes(anthropic.AnthropicError)
    assert set(classes) == set(expected), "classify the new or removed anthropic exception classes"
    for name, cls in classes.items():
        kind = anthropic_adapter.class_kind(build(cls, status_of(cls, ANTHROPIC_STATUS), None))
        assert (kind.name if kind else "BY_BODY") == expected[name], name


@pytest.mark.parametrize(
    "status,error_type,kind",
    [
        (418, "", K.INVALID_REQUEST),
        (200, "overloaded_error", K.OVERLOADED),  # `event: error` after HTTP 200
        (200, "rate_limit_error", K.RATE_LIMITED),
        (200, "api_error", K.SERVER_ERROR),
        (200, "invalid_request_error", K.INVALID_REQUEST),
        (200, "authentication_error", K.AUTH_FAILED),
        (200, "billing_error", K.QUOTA_EXHAUSTED),
        (200, "request_too_large", K.CONTEXT_TOO_LONG),
        (200, "timeout_error", K.TIMEOUT),
        (200, "", K.SERVER_ERROR),
    ],
)
def test_anthropic_generic_status_error_by_body(status: int, error_type: str, kind: FailureKind) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": "x"}}
    exc = anthropic.APIStatusError("x", response=response(status, body), body=body)
    assert anthropic_adapter.map_error(exc).kind is kind


@pytest.mark.parametrize(
    "cls,status,message,kind",
    [
        (anthropic.BadRequestError, 400, "prompt is too long: 215000 tokens > 200000 maximum", K.CONTEXT_TOO_LONG),
        (anthropic.BadRequestError, 400, "Your credit balance is too low to access the API.", K.QUOTA_EXHAUSTED),
        (anthropic.BadRequestError, 400, "temperature: range: 0..1", K.INVALID_REQUEST),
        (anthropic.OverloadedError, 529, "Overloaded", K.OVERLOADED),
    ],
)
def test_anthropic_refinements(
    cls: type[anthropic.APIStatusError], status: int, message: str, kind: FailureKind
) -> None:
    body = {"type": "error", "error": {"type": "x", "message": message}}
    headers = {"retry-after": "7", "request-id": "req_1"}
    error = anthropic_adapter.map_error(cls("x", response=response(status, body, headers), body=body))
    assert (error.kind, error.status_code, error.retry_after_s) == (kind, status, 7.0)
    assert error.upstream_request_id == "req_1"


GEMINI_EXPECTED: dict[str, FailureKind | None] = {
    "APIError": None,
    "ClientError": None,
    "ServerError": None,
    "UnknownApiResponseError": K.MALFORMED_RESPONSE,
    "UnknownFunctionCallArgumentError": K.INVALID_REQUEST,
    "UnsupportedFunctionError": K.INVALID_REQUEST,
    "FunctionInvocationError": K.INVALID_REQUEST,
    "ContinuationInterruptedError": K.CONNECTION_ERROR,
}


def test_gemini_every_class_is_classified() -> None:
    classes = {
        n: c
        for n, c in inspect.getmembers(genai_errors, inspect.isclass)
        if issubclass(c, Exception) and c.__module__ == genai_errors.__name__
    }
    classes |= sdk_classes(genai_errors.APIError)
    assert set(classes) == set(GEMINI_EXPECTED)
    for name, cls in classes.items():
        assert gemini_adapter.class_kind(build_gemini(cls)) is GEMINI_EXPECTED[name], name


def build_gemini(cls: type[BaseException], code: int = 500, body: object = None) -> BaseException:
    if issubclass(cls, genai_errors.APIError):
        return cls(code, body or {"error": {"code": code, "message": "x", "status": "X"}}, None)
    return cls("boom")


def gemini_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> ProviderError:
    body = {"error": {"code": code, "message": message, "status": status, "details": details or []}}
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return gemini_adapter.map_error(cls(code, body, None))


@pytest.mark.parametrize(
    "code,status,message,kind",
    [
        (400, "INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature'", K.INVALID_REQUEST),
        (
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            K.CONTEXT_TOO_LONG,
        ),
        (401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", K.AUTH_FAILED),
        (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.", K.AUTH_FAILED),
        (404, "NOT_FOUND", "models/nope is not found", K.AUTH_FAILED),
        (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", K.RATE_LIMITED),
        (429, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted.", K.QUOTA_EXHAUSTED),
        (500, "INTERNAL", "An internal error has occurred.", K.SERVER_ERROR),
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", K.OVERLOADED),
        (504, "DEADLINE_EXCEEDED", "Deadline exceeded.", K.TIMEOUT),
    ],
)
def test_gemini_by_code_and_body(code: int, status: str, message: str, kind: FailureKind) -> None:
    error = gemini_error(code, status, message)
    assert (error.kind, error.status_code) == (kind, code)


def test_gemini_bad_key_is_auth_failure_despite_400() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    assert gemini_error(400, "INVALID_ARGUMENT", "API key not valid.", [info]).kind is K.AUTH_FAILED


@pytest.mark.parametrize("delay,seconds", [("2s", 2.0), ("1.500s", 1.5), ("0s", 0.0), ("soon", None)])
def test_gemini_retry_delay_from_body(delay: str, seconds: float | None) -> None:
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    ]
    error = gemini_error(429, "RESOURCE_EXHAUSTED", "quota", details)
    assert error.kind is K.RATE_LIMITED and error.retry_after_s == seconds


@pytest.mark.parametrize(
    "code,kind",
    [("insufficient_quota", K.QUOTA_EXHAUSTED), ("rate_limit_exceeded", K.RATE_LIMITED)],
)
def test_openai_429_by_code(code: str, kind: FailureKind) -> None:
    body = {"message": "x", "type": code, "code": code}
    exc = openai.RateLimitError("x", response=response(429, {"error": body}, {"retry-after-ms": "250"}), body=body)
    error = openai_adapter.map_error(exc)
    assert (error.kind, error.retry_after_s) == (kind, 0.25)


@pytest.mark.parametrize(
    "cls,status,body,kind",
    [
        (openai.BadRequestError, 400, {"code": "context_length_exceeded"}, K.CONTEXT_TOO_LONG),
        (
            openai.BadRequestError,
            400,
            {"message": "This model's maximum context length is 8192 tokens"},
            K.CONTEXT_TOO_LONG,
        ),
        (openai.BadRequestError, 400, {"code": "content_filter"}, K.CONTENT_FILTERED),
        (openai.InternalServerError, 503, {"type": "server_error"}, K.OVERLOADED),
        (openai.InternalServerError, 502, {"type": "server_error"}, K.SERVER_ERROR),
        (openai.APIStatusError, 529, {}, K.OVERLOADED),
    ],
)
def test_openai_refinements(
    cls: type[openai.APIStatusError], status: int, body: dict[str, str], kind: FailureKind
) -> None:
    exc = cls("x", response=response(status, {"error": body}, {"x-request-id": "req_9"}), body=body)
    error = openai_adapter.map_error(exc)
    assert (error.kind, error.status_code, error.upstream_request_id) == (kind, status, "req_9")


def test_openai_error_inside_a_200_stream() -> None:
    exc = openai.APIError("x", REQUEST, body={"message": "slow down", "type": "rate_limit_exceeded"})
    assert openai_adapter.map_error(exc).kind is K.RATE_LIMITED
    assert openai_adapter.map_error(openai.APIError("x", REQUEST, body=None)).kind is K.SERVER_ERROR


TRANSPORT = [
    (httpx2.ConnectError("refused"), K.CONNECTION_ERROR),
    (httpx2.ReadError("reset"), K.CONNECTION_ERROR),
    (httpx2.RemoteProtocolError("peer closed connection"), K.CONNECTION_ERROR),
    (httpx2.ConnectTimeout("t"), K.TIMEOUT),
    (httpx2.ReadTimeout("t"), K.TIMEOUT),
    (httpx2.PoolTimeout("t"), K.TIMEOUT),
    (httpx2.DecodingError("gzip"), K.MALFORMED_RESPONSE),
    (httpx.ConnectError("refused"), K.CONNECTION_ERROR),
    (httpx.ReadTimeout("t"), K.TIMEOUT),
    (httpx.RemoteProtocolError("x"), K.CONNECTION_ERROR),
    (json.JSONDecodeError("bad", "{", 0), K.MALFORMED_RESPONSE),
    (ConnectionResetError("reset"), K.CONNECTION_ERROR),
    (TimeoutError(), K.TIMEOUT),
]


@pytest.mark.parametrize("exc,kind", TRANSPORT, ids=[type(e).__module__ + "." + type(e).__name__ for e, _ in TRANSPORT])
def test_transport_exceptions_the_sdks_let_through(exc: Exception, kind: FailureKind) -> None:
    assert classify_transport(exc) is kind
    for adapter in (openai_adapter, anthropic_adapter, gemini_adapter, cohere_adapter):
        assert adapter.map_error(exc).kind is kind


def test_every_httpx_exception_class_is_classified() -> None:
    for module in (httpx, httpx2):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, module.RequestError) and cls is not module.RequestError:
                exc = cls("x", request=module.Request("GET", "http://127.0.0.1/"))
                assert classify_transport(exc) is not None, f"{module.__name__}.{name}"


@pytest.mark.parametrize(
    "headers,seconds",
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "garbage"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(httpx2.Headers(headers)) == seconds


def test_error_messages_are_scrubbed() -> None:
    key = "sk-proj-abcdefghijklmnop1234"
    body = {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error", "code": "bad_key"}
    exc = openai.AuthenticationError(body["message"], response=response(401, {"error": body}), body=body)
    error = openai_adapter.map_error(exc)
    assert error.kind is K.AUTH_FAILED and key not in error.message and "[REDACTED]" in error.message


@pytest.mark.parametrize(
    "text,leaked",
    [
        ("Incorrect API key provided: sk-proj-AbC123xyz789. See docs.", "sk-proj-AbC123xyz789"),
        ("invalid x-api-key sk-ant-api03-abcdef123456", "sk-ant-api03-abcdef123456"),
        ("POST https://host/v1beta/models/x?key=AIzaSyA-1234567890abcdefghijklm", "AIzaSy"),
        ("Authorization: Bearer gsk_live_abc123def456", "gsk_live_abc123def456"),
        ('{"api_key": "zz-custom-secret-99"}', "zz-custom-secret-99"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dGVzdHNpZ25hdHVyZQ", "eyJhbGci"),
    ],
)
def test_scrub_removes_key_like_strings(text: str, leaked: str) -> None:
    cleaned = scrub(text)
    assert leaked not in cleaned and REDACTED in cleaned


def test_scrub_removes_the_configured_secret_and_keeps_ordinary_text() -> None:
    assert scrub("the key was hunter2hunter2 ok", ["hunter2hunter2"]) == f"the key was {REDACTED} ok"
    ordinary = "Rate limit reached for gpt-4o-mini (req_abc123) on requests per min: Limit 3, retry in 2s."
    assert scrub(ordinary) == ordinary


# aiohttp, under the SDKs by default: every class its client raises, by the kind it must map to. The table in
# errors.py must list each one itself (no catch-all), and the decision must survive the wrapping the error
# reaches the adapter in: the SDK's APIConnectionError / APITimeoutError, from the aiohttp wrapper's httpx2
# exception (which calls a refused connection ConnectTimeout), from aiohttp's own.
AIOHTTP_EXPECTED: dict[str, FailureKind] = {
    **dict.fromkeys(
        [
            "ClientError",
            "ClientResponseError",
            "WSServerHandshakeError",
            "ClientHttpProxyError",
            "ClientConnectionError",
            "ClientConnectionResetError",
            "ClientOSError",
            "ClientConnectorError",
            "ClientConnectorDNSError",
            "ClientProxyConnectionError",
            "UnixClientConnectorError",
            "ClientSSLError",
            "ClientConnectorSSLError",
            "ClientConnectorCertificateError",
            "ServerConnectionError",
            "ServerDisconnectedError",
            "ServerFingerprintMismatch",
            "ClientPayloadError",
            "UploadAbortedError",
            "InvalidURL",
            "InvalidUrlClientError",
            "NonHttpUrlClientError",
            "HttpProcessingError",
            "BadHttpMessage",
            "HttpBadRequest",
            "PayloadEncodingError",
            "TransferEncodingError",
            "ContentLengthError",
            "LineTooLong",
            "InvalidHeader",
            "BadStatusLine",
            "BadHttpMethod",
            "InvalidURLError",
        ],
        K.CONNECTION_ERROR,
    ),
    **dict.fromkeys(["ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError"], K.TIMEOUT),
    **dict.fromkeys(["ContentTypeError", "ContentEncodingError", "DecompressSizeError"], K.MALFORMED_RESPONSE),
    **dict.fromkeys(
        ["TooManyRedirects", "RedirectClientError", "InvalidUrlRedirectClientError", "NonHttpUrlRedirectClientError"],
        K.SERVER_ERROR,
    ),
}
CONNECTION_KEY = ConnectionKey("127.0.0.1", 443, True, True, None, None, None)


def build_aiohttp(cls: type[BaseException]) -> BaseException:
    params = inspect.signature(cls.__init__).parameters
    values: dict[str, Any] = {
        "request_info": aiohttp.RequestInfo(
            URL("http://127.0.0.1/v1"), "POST", CIMultiDictProxy(CIMultiDict()), URL("http://127.0.0.1/v1")
        ),
        "history": (),
        "connection_key": CONNECTION_KEY,
        "os_error": ConnectionRefusedError(),
        "certificate_error": ssl.SSLCertVerificationError("x"),
        "path": "/x",
        "expected": b"a",
        "got": b"b",
        "host": "h",
        "port": 1,
        "url": "http://x",
        "message": "x",
        "line": "x",
        "hdr": "x",
    }
    if list(params) == ["self", "args", "kwargs"]:
        return cls("x")
    positional = [
        values[n]
        for n, p in params.items()
        if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
    ]
    return cls(*positional)


def as_the_sdk_raises_it(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as error:
            raise httpx2.ConnectTimeout(str(error)) from error  # what the aiohttp wrapper raises for most
    except httpx2.ConnectTimeout as wrapped:
        try:
            raise openai.APITimeoutError(request=REQUEST) from wrapped
        except openai.APITimeoutError as outer:
            return outer


def test_every_aiohttp_exception_class_is_classified() -> None:
    classes = sdk_classes(aiohttp.ClientError) | sdk_classes(aiohttp_http.HttpProcessingError)
    assert set(classes) == set(AIOHTTP_EXPECTED), "classify the new or removed aiohttp exception classes"
    for name, cls in classes.items():
        assert cls in AIOHTTP_KINDS, f"{name} is not in errors.AIOHTTP_KINDS itself"
        exc = as_the_sdk_raises_it(build_aiohttp(cls))
        for adapter in (openai_adapter, anthropic_adapter, gemini_adapter, cohere_adapter):
            assert adapter.map_error(exc).kind is AIOHTTP_EXPECTED[name], (name, adapter.__name__)  # type: ignore[arg-type]


def test_a_refused_connection_that_the_wrapper_calls_a_timeout_is_a_connection_error() -> None:
    os_error = ConnectionRefusedError(111, "Connect call failed")
    refused = aiohttp.ClientConnectorError(CONNECTION_KEY, os_error)
    refused.__cause__ = os_error  # as aiohttp raises it
    error = openai_adapter.map_error(as_the_sdk_raises_it(refused))  # type: ignore[arg-type]
    assert (error.kind, error.message) == (K.CONNECTION_ERROR, "connection refused by 127.0.0.1:443")
