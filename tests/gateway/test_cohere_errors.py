"""Table tests for the Cohere adapter: every exception class the `cohere` SDK defines maps to a named kind.

The SDK's classes are enumerated from the installed package (every module under `cohere`, the cloud
clients' aside), so a class a newer SDK adds fails here until someone classifies it. Instances are built
the way the SDK's raw client builds them: `Cls(body=..., headers=...)` with the status fixed by the class.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import cohere
import httpx
import pytest
from cohere.core.api_error import ApiError
from cohere.core.http_sse import SSEError
from cohere.core.parse_error import ParsingError

from gateway_service.domain.failures import FailureKind
from gateway_service.providers import cohere as cohere_adapter
from gateway_service.providers.scrub import REDACTED

K = FailureKind
# The AWS (cohere_aws), Bedrock, SageMaker and OCI clients are other products (and import optional packages).
OTHER_CLOUDS = ("aws", "bedrock", "sagemaker", "oci")

EXPECTED: dict[str, FailureKind | None] = {
    "ApiError": None,
    "BadRequestError": K.INVALID_REQUEST,
    "UnauthorizedError": K.AUTH_FAILED,
    "ForbiddenError": K.AUTH_FAILED,
    "NotFoundError": K.AUTH_FAILED,
    "UnprocessableEntityError": K.INVALID_REQUEST,
    "TooManyRequestsError": K.RATE_LIMITED,
    "InvalidTokenError": K.AUTH_FAILED,
    "ClientClosedRequestError": K.CONNECTION_ERROR,
    "InternalServerError": K.SERVER_ERROR,
    "NotImplementedError": K.SERVER_ERROR,
    "ServiceUnavailableError": K.OVERLOADED,
    "GatewayTimeoutError": K.TIMEOUT,
    "ParsingError": K.MALFORMED_RESPONSE,
    "SSEError": K.MALFORMED_RESPONSE,
}
# What map_error makes of each, built as the SDK builds it (ApiError: an unlisted 418).
MAPPED = {**{n: k for n, k in EXPECTED.items() if k is not None}, "ApiError": K.INVALID_REQUEST}


def sdk_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(cohere.__path__, "cohere."):
        if any(cloud in info.name for cloud in OTHER_CLOUDS) or ".types" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__.startswith("cohere"):
                assert found.get(name, value) is value, f"two classes named {name}"
                found[name] = value
    return found


def build(cls: type[BaseException], body: Any = None, headers: dict[str, str] | None = None) -> BaseException:
    if cls is ApiError:
        return ApiError(status_code=418, headers=headers or {}, body=body)
    if cls is ParsingError:
        return ParsingError(status_code=200, headers=headers or {}, body=body, cause=ValueError("shape"))
    if cls is SSEError:
        return SSEError("Expected response header Content-Type to contain 'text/event-stream', got ''")
    return cls(body, headers or {})  # type: ignore[call-arg]


def test_every_class_is_classified() -> None:
    classes = sdk_exception_classes()
    assert set(classes) == set(EXPECTED), "classify the new or removed cohere exception classes"
    for name, cls in classes.items():
        assert cls in cohere_adapter.CLASS_KINDS, f"{name} missing from the adapter's table"
        assert cohere_adapter.class_kind(build(cls)) is EXPECTED[name], name
        error = cohere_adapter.map_error(build(cls, {"id": "gen-1", "message": "boom"}))  # type: ignore[arg-type]
        assert error.kind is MAPPED[name], name


def test_an_sse_error_is_a_malformed_answer_not_a_connection_error() -> None:
    """SSEError is an httpx.TransportError; the adapter decides it before the transport table would."""
    assert issubclass(SSEError, httpx.TransportError)
    assert cohere_adapter.map_error(build(SSEError)).kind is K.MALFORMED_RESPONSE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cls,status,message,kind",
    [
        (
            cohere.BadRequestError,
            400,
            "too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 130412.",
            K.CONTEXT_TOO_LONG,
        ),
        (cohere.BadRequestError, 400, "invalid request: temperature must be between 0 and 1", K.INVALID_REQUEST),
        (
            cohere.TooManyRequestsError,
            429,
            "You are using a Trial key, which is limited to 1000 API calls / month.",
            K.QUOTA_EXHAUSTED,
        ),
        (cohere.TooManyRequestsError, 429, "You are past the per minute request limit.", K.RATE_LIMITED),
        (cohere.InvalidTokenError, 498, "invalid api token", K.AUTH_FAILED),
    ],
)
def test_refinements_by_message(cls: type[ApiError], status: int, message: str, kind: FailureKind) -> None:
    exc = cls({"id": "4d8f-sim", "message": message}, {"retry-after": "7"})  # type: ignore[call-arg]
    error = cohere_adapter.map_error(exc)
    assert (error.kind, error.status_code, error.retry_after_s) == (kind, status, 7.0)
    assert error.upstream_request_id == "4d8f-sim" and message in error.message


@pytest.mark.parametrize(
    "status,kind",
    [(402, K.QUOTA_EXHAUSTED), (502, K.SERVER_ERROR), (529, K.OVERLOADED), (408, K.TIMEOUT), (418, K.INVALID_REQUEST)],
)
def test_a_bare_api_error_by_its_status(status: int, kind: FailureKind) -> None:
    """The SDK raises a bare ApiError for every status it has no class for, with the JSON or text body."""
    error = cohere_adapter.map_error(ApiError(status_code=status, headers={"retry-after-ms": "250"}, body="<html>"))
    assert (error.kind, error.status_code, error.retry_after_s) == (kind, status, 0.25)
    assert "<html>" in error.message


def test_the_key_never_leaves_in_a_message() -> None:
    key = "co-test-abcdefghijklmnop0123"
    exc = cohere.UnauthorizedError({"id": "x", "message": f"invalid api token {key}"}, {})
    error = cohere_adapter.map_error(exc, (key,))
    assert error.kind is K.AUTH_FAILED and key not in error.message and REDACTED in error.message
