"""Base of both services' error trees, packed as `google.rpc.Status` with details.

    ServiceError                    carries a canonical code and an ErrorInfo reason
     +-- (gateway_service.errors.GatewayError ...)
     +-- (schema_service.errors.SchemaServiceError ...)

Domain code raises these; only the servicer boundary turns them into a gRPC status
(`to_status_proto`), so nothing here imports grpc.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, named by its path (e.g. `metrics[17].value`)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota or budget."""

    subject: str
    description: str


class ServiceError(Exception):
    """An error with a canonical gRPC code and an UPPER_SNAKE `ErrorInfo` reason."""

    code: int = code_pb2.INTERNAL
    reason: str = "INTERNAL"
    domain: str = "llm-platform"

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_after_s: float | None = None,
        quota_violations: Sequence[QuotaViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_after_s = retry_after_s
        self.quota_violations = tuple(quota_violations)

    def to_status_proto(self) -> status_pb2.Status:
        """The `google.rpc.Status` for this error: ErrorInfo always, other details where set."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain, metadata=self.metadata)
        details: list[object] = [info]
        if self.field_violations:
            details.append(_bad_request(self.field_violations))
        if self.retry_after_s is not None:
            details.append(_retry_info(self.retry_after_s))
        if self.quota_violations:
            details.append(_quota_failure(self.quota_violations))
        return status_pb2.Status(code=self.code, message=self.message, details=[_pack(d) for d in details])


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _bad_request(violations: Sequence[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(0, int(seconds * 1e9)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _quota_failure(violations: Sequence[QuotaViolation]) -> error_details_pb2.QuotaFailure:
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
            for v in violations
        ]
    )

