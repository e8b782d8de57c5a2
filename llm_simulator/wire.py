"""Pieces shared by the three wire formats."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from llm_simulator.faults import Fault
    from llm_simulator.plan import Plan, Prompt


@dataclass(frozen=True)
class Frame:
    """One SSE event. `content` frames are counted by a fault's `at=`; `final` ones close the answer."""

    data: bytes
    kind: Literal["pre", "content", "final"]


def sse(payload: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def retry_headers(fault: Fault) -> dict[str, str]:
    """Retry-After and retry-after-ms as the fault asks (the OpenAI, Anthropic and Cohere error headers)."""
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    return headers


def signature(text: str) -> str:
    """A stable stand-in for the opaque reasoning signatures providers hand out."""
    return "sig_" + hashlib.sha256(text.encode()).hexdigest()[:24]


class Wire(Protocol):
    """One provider's wire format; each wire_*.py module implements it."""

    REQUEST_ID_HEADER: str

    def parse(self, body: dict[str, Any], path_model: str = "", path_stream: bool | None = None) -> Prompt: ...

    def error(self, fault: Fault, prompt: Prompt, api_key: str) -> tuple[int, dict[str, Any], dict[str, str]]: ...

    def stream_error(self, fault: Fault) -> bytes: ...

    def malformed(self) -> bytes: ...

    def frames(self, plan: Plan, prompt: Prompt, request_id: str) -> list[Frame]: ...

    def complete(self, plan: Plan, prompt: Prompt, request_id: str) -> dict[str, Any]: ...
