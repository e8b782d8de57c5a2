"""Every id an upstream chooses leaves scrubbed and bounded (issue #18, point 7): an upstream that puts the key
into its request-id header, a chunk id, Anthropic's message id or Gemini's responseId, or sends a 512 KiB
id, gives the caller, the access log and the error none of it (providers/streaming.py, scrub_id)."""

from __future__ import annotations

import json
import logging

import pytest

from gateway_service.domain.failures import ProviderError
from gateway_service.domain.request import Finished, ProviderEvent, ToolCallDelta
from gateway_service.providers.scrub import MAX_UPSTREAM_ID_CHARS, REDACTED
from tests.gateway.rawhttp import Answer, chunk, head, raw_upstream, sse_frames
from tests.gateway.test_provider_streams import KEY
from tests.hostile.upstream import KINDS, STACKS, adapter, read

pytestmark = [pytest.mark.timeout(30), pytest.mark.parametrize("stack", STACKS), pytest.mark.parametrize("kind", KINDS)]

FORMS = {
    "raw": KEY,
    "percent": "".join(f"%{b:02X}" for b in KEY.encode()),
    "second-half": KEY[len(KEY) // 2 :],
    "huge": "id" * (1 << 18),  # 512 KiB: under the line cap (a 1 MiB id line is refused by it)
}
HEADER = {
    "openai_compatible": b"x-request-id",
    "anthropic": b"request-id",
    "gemini": b"x-goog-request-id",
    "cohere": b"x-request-id",  # not read: Cohere names a request in its body (message-start, an error's `id`)
}


def poisoned_answer(kind: str, poison: str, in_header: bool) -> bytes:
    """The simulator's answer with every id it chose (`req`) replaced by `poison`, or the header carrying it."""
    quoted = json.dumps(poison)[1:-1].encode()  # as the id would sit inside a JSON string
    frames = [f if in_header else f.replace(b'req"', quoted + b'"') for f in sse_frames(kind, "hello")]
    body = b"".join(frames)
    extra = [HEADER[kind] + b": " + poison.encode()] if in_header else []
    return head(b"transfer-encoding: chunked", *extra) + chunk(body) + chunk(b"")


def leaked(text: str) -> bool:
    pieces = (KEY[i : i + 12] for i in range(len(KEY) - 11))
    return len(text) > MAX_UPSTREAM_ID_CHARS or any(p in text for p in pieces) or "%53" in text


def ids(events: list[ProviderEvent]) -> list[str]:
    return [e.upstream_request_id for e in events if isinstance(e, Finished)] + [
        e.id for e in events if isinstance(e, ToolCallDelta)
    ]


@pytest.mark.parametrize("in_header", [False, True], ids=["in-body", "in-header"])
@pytest.mark.parametrize("form", sorted(FORMS))
async def test_an_id_never_carries_the_key_out(
    kind: str, stack: str, form: str, in_header: bool, caplog: pytest.LogCaptureFixture
) -> None:
    if in_header and form == "huge":
        pytest.skip("a 512 KiB header is refused by the HTTP parser")
    answer = poisoned_answer(kind, FORMS[form], in_header)
    async with raw_upstream(lambda _: Answer(answer)) as (_, port):
        with caplog.at_level(logging.INFO, logger="gateway_service.upstream"):
            events, error = await read(adapter(kind, port, stack))
    assert error is None and ids(events), (error, events)
    logged = [str(getattr(r, "upstream_request_id", "")) for r in caplog.records]
    assert logged and not any(leaked(t) for t in [*ids(events), *logged]), (ids(events), logged)


async def test_an_error_carries_no_key_in_its_request_id(kind: str, stack: str) -> None:
    body = b'{"error": {"message": "busy", "type": "server_error"}}'
    answer = (
        head(
            HEADER[kind] + b": " + KEY.encode(), b"content-length: %d" % len(body), status=b"HTTP/1.1 500 Oops"
        ).replace(b"text/event-stream", b"application/json")
        + body
    )
    async with raw_upstream(lambda _: Answer(answer)) as (_, port):
        _, error = await read(adapter(kind, port, stack))
    assert isinstance(error, ProviderError) and error.status_code == 500
    assert not leaked(error.upstream_request_id), error.upstream_request_id
    # google-genai's error carries no request id, nor Cohere's without an `id` in its body; the others' carry the
    # header's, scrubbed.
    assert (REDACTED in error.upstream_request_id) is (kind not in ("gemini", "cohere")), error.upstream_request_id
