"""Base of both services' error trees, packed as `google.rpc.Status` with details.

    ServiceError                    carries a canonical code and an ErrorInfo reason
     +-- (gateway_service.errors.GatewayError ...)
     +-- (schema_service.errors.SchemaServiceError ...)

Domain code raises these; only the servicer boundary turns them into a gRPC status
(`to_status_proto`), so nothing here imports grpc.

The status travels in the call's trailers (base64 in `grpc-status-details-bin`, the message again in
`grpc-message`), and clients refuse trailers over 8 KiB as a whole. So every status is bounded here, once
for both services: the message, each ErrorInfo metadata value and each violation are truncated, at most
MAX_LISTED_VIOLATIONS violations are listed (the message and `ErrorInfo.metadata["violations_omitted"]` say
how many more there were), and the packed status never exceeds MAX_STATUS_BYTES, which keeps the trailers
under 4 KiB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# base64 of 2,000 bytes is 2,668; with grpc-message (MAX_MESSAGE_CHARS, at most 1,200 bytes percent-encoded) and the
# header names, the trailers stay under 4 KiB.
MAX_STATUS_BYTES = 2000
MAX_MESSAGE_CHARS = 200
MAX_METADATA_VALUE_CHARS = 300
MAX_METADATA_ENTRIES = 32
MAX_LISTED_VIOLATIONS = 20
MAX_FIELD_CHARS = 120
MAX_DESCRIPTION_CHARS = 200
ELLIPSIS = "..."


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
        omitted_violations: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_after_s = retry_after_s
        self.quota_violations = tuple(quota_violations)
        # Violations found but not kept by the raiser (it stopped collecting), reported with the listed ones.
        self.omitted_violations = omitted_violations

    def to_status_proto(self) -> status_pb2.Status:
        """The `google.rpc.Status` for this error: ErrorInfo always, other details where set; bounded in size."""
        violations = list(self.field_violations[:MAX_LISTED_VIOLATIONS])
        omitted = self.omitted_violations + len(self.field_violations) - len(violations)
        entries = list(self.metadata.items())[:MAX_METADATA_ENTRIES]
        value_chars = MAX_METADATA_VALUE_CHARS
        status = self._status(entries, value_chars, violations, omitted)
        # Still too big (long metadata values, many long violations): give up detail in this order.
        while status.ByteSize() > MAX_STATUS_BYTES:
            if value_chars > 80:
                value_chars //= 2
            elif len(violations) > 1:
                violations.pop()
                omitted += 1
            elif value_chars > 20:
                value_chars //= 2
            elif entries:
                entries.pop()
            else:
                break
            status = self._status(entries, value_chars, violations, omitted)
        return status

    def _status(
        self, entries: list[tuple[str, str]], value_chars: int, violations: Sequence[FieldViolation], omitted: int
    ) -> status_pb2.Status:
        metadata = {truncate(k, 64): truncate(v, value_chars) for k, v in entries}
        message = self.message
        if omitted:
            metadata["violations_omitted"] = str(omitted)
            message = f"{truncate(message, MAX_MESSAGE_CHARS - 60)} ({omitted} more invalid field(s) not listed)"
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain, metadata=metadata)
        details: list[object] = [info]
        if violations:
            details.append(_bad_request(violations))
        if self.retry_after_s is not None:
            details.append(_retry_info(self.retry_after_s))
        if self.quota_violations:
            details.append(_quota_failure(self.quota_violations[:MAX_LISTED_VIOLATIONS]))
        return status_pb2.Status(
            code=self.code, message=truncate(message, MAX_MESSAGE_CHARS), details=[_pack(d) for d in details]
        )


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in "..." when it was cut."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _bad_request(violations: Sequence[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=truncate(v.field, MAX_FIELD_CHARS), description=truncate(v.description, MAX_DESCRIPTION_CHARS)
            )
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
            error_details_pb2.QuotaFailure.Violation(
                subject=truncate(v.subject, MAX_FIELD_CHARS), description=truncate(v.description, MAX_DESCRIPTION_CHARS)
            )
            for v in violations
        ]
    )
