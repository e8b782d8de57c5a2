"""Gateway errors -> OpenAI's error JSON and HTTP status, so the OpenAI SDKs' own retry logic behaves.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages[0].content", "code": "..."}}

    INVALID_ARGUMENT            400 invalid_request_error (param: the first bad parameter; all in `details`)
    INVALID_ARGUMENT model      404 invalid_request_error, code model_not_found (as OpenAI answers)
    OUT_OF_RANGE                400 invalid_request_error, code context_length_exceeded
    UNAUTHENTICATED             401 authentication_error
    PERMISSION_DENIED           403 permission_error
    RESOURCE_EXHAUSTED          429 rate_limit_error, Retry-After / retry-after-ms from RetryInfo
    UNAVAILABLE, FAILED_PRE...  503 api_error, Retry-After when known
    DEADLINE_EXCEEDED           504 timeout
    anything else               500 api_error, without the exception's text (it is in the log)

`x-should-retry` tells the SDKs (openai-python, openai-node) whether a retry can help: true for a 429 or 503
that names a wait of at most MAX_SDK_WAIT_S, false for one that names a longer wait (a daily dollar budget)
or for a mid-stream failure's status, so a client does not hammer a budget that resets tomorrow.
"""

from __future__ import annotations

import math
from typing import Any

from google.rpc import code_pb2, error_details_pb2

from servicekit.errors import ServiceError

MAX_SDK_WAIT_S = 60.0  # the openai SDKs wait at most this long on a Retry-After before using their own backoff
STATUS = {
    code_pb2.INVALID_ARGUMENT: (400, "invalid_request_error"),
    code_pb2.OUT_OF_RANGE: (400, "invalid_request_error"),
    code_pb2.UNAUTHENTICATED: (401, "authentication_error"),
    code_pb2.PERMISSION_DENIED: (403, "permission_error"),
    code_pb2.NOT_FOUND: (404, "invalid_request_error"),
    code_pb2.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    code_pb2.UNAVAILABLE: (503, "api_error"),
    code_pb2.FAILED_PRECONDITION: (503, "api_error"),
    code_pb2.DEADLINE_EXCEEDED: (504, "timeout"),
}


def error_body(error: ServiceError) -> dict[str, Any]:
    """The `{"error": {...}}` object for `error` (also the last event of a stream it ends), made from the same
    bounded `google.rpc.Status` the gRPC port would send (servicekit.errors: message, metadata and violations cut
    down until the whole stays under MAX_STATUS_BYTES), so the two faces say the same within the same bound."""
    _, kind = STATUS.get(error.code, (500, "api_error"))
    status = error.to_status_proto()
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
    violations = bad_request.field_violations
    param = violations[0].field if violations else None  # named as the body names them (wire.parse)
    code = error.reason.lower()
    if error.reason == "UNKNOWN_MODEL":
        code, param = "model_not_found", "model"
    elif error.code == code_pb2.OUT_OF_RANGE:
        code = "context_length_exceeded"
    body: dict[str, Any] = {"message": status.message, "type": kind, "param": param, "code": code}
    if violations:
        body["details"] = [{"param": v.field, "message": v.description} for v in violations]
    if info.metadata:
        body["metadata"] = dict(info.metadata)
    return {"error": body}


def status_of(error: ServiceError) -> int:
    if error.reason == "UNKNOWN_MODEL":
        return 404
    return STATUS.get(error.code, (500, "api_error"))[0]


def headers_of(error: ServiceError) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up), retry-after-ms and x-should-retry where they apply."""
    status = status_of(error)
    headers: dict[str, str] = {}
    wait = error.retry_after_s
    if wait is not None and status in (429, 503):
        headers["retry-after"] = str(max(0, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(0, math.ceil(wait * 1000)))
        headers["x-should-retry"] = "true" if wait <= MAX_SDK_WAIT_S else "false"
    elif status in (429, 503):
        headers["x-should-retry"] = "false" if error.reason == "SPEND_BUDGET_EXHAUSTED" else "true"
    return headers
