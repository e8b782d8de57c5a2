"""Error details stay small whatever the error holds: violations capped (and how many more said), echoed values
truncated, the packed status under MAX_STATUS_BYTES so that the trailers stay under 4 KiB."""

from __future__ import annotations

import base64

from google.rpc import error_details_pb2

from servicekit.errors import MAX_LISTED_VIOLATIONS, MAX_STATUS_BYTES, FieldViolation, ServiceError


def _unpacked(error: ServiceError) -> tuple[int, str, error_details_pb2.ErrorInfo, error_details_pb2.BadRequest]:
    status = error.to_status_proto()
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for packed in status.details:
        packed.Unpack(info) if packed.Is(info.DESCRIPTOR) else packed.Is(bad.DESCRIPTOR) and packed.Unpack(bad)
    return status.ByteSize(), status.message, info, bad


def test_a_hundred_thousand_violations_are_capped_and_counted() -> None:
    violations = [FieldViolation(f"messages[{i}].content", "must not be empty") for i in range(100_000)]
    size, message, info, bad = _unpacked(ServiceError("invalid request", field_violations=violations))
    assert size <= MAX_STATUS_BYTES
    assert 1 <= len(bad.field_violations) <= MAX_LISTED_VIOLATIONS
    omitted = 100_000 - len(bad.field_violations)
    assert info.metadata["violations_omitted"] == str(omitted)
    assert f"{omitted} more invalid field(s) not listed" in message


def test_echoed_values_are_truncated() -> None:
    model = "m" * 100_000
    error = ServiceError(
        f"unknown model {model!r}",
        metadata={"model": model, **{f"attempt_{i}": "x" * 5_000 for i in range(40)}},
        field_violations=[FieldViolation("model" + "]" * 10_000, f"no route named {model}")],
    )
    size, message, info, bad = _unpacked(error)
    assert size <= MAX_STATUS_BYTES
    assert len(message) <= 200 and message.endswith("...")
    assert all(len(v) <= 300 for v in info.metadata.values())
    assert bad.field_violations and len(bad.field_violations[0].description) <= 200


def test_the_trailers_of_the_largest_status_fit_in_4_kib() -> None:
    # Worst case for the message: every character percent-encoded three times over in grpc-message.
    error = ServiceError(
        "é" * 10_000,
        metadata={f"k{i}": "é" * 1_000 for i in range(100)},
        field_violations=[FieldViolation("é" * 1_000, "é" * 1_000) for _ in range(1_000)],
    )
    status = error.to_status_proto()
    trailer = len(base64.b64encode(status.SerializeToString())) + len(status.message.encode()) * 3
    assert trailer + len("grpc-status-details-bin") + len("grpc-message") + 20 <= 4096


def test_small_errors_are_unchanged() -> None:
    violations = [FieldViolation("model", "a route alias or provider/model is required")]
    _, message, info, bad = _unpacked(
        ServiceError("invalid request: model", metadata={"a": "b"}, field_violations=violations)
    )
    assert message == "invalid request: model"
    assert dict(info.metadata) == {"a": "b"}
    assert [(v.field, v.description) for v in bad.field_violations] == [("model", violations[0].description)]
