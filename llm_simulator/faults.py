"""Fault specs: `[[fault:KIND key=value ...]]` markers and scripted faults.

See the package docstring for the catalogue. A spec is parsed once into a Fault;
`applies_to` filters by wire format (`api=`) and model name (`model=`) so that one
conversation can fail on one provider and succeed on the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MARKER = re.compile(r"\[\[(fault|reply|call|think|redacted):(.*?)\]\]", re.DOTALL)

# Faults answered with an HTTP error status instead of a stream.
STATUS_KINDS = {"429", "quota", "context", "overloaded", "auth", "invalid"}
# Faults that happen inside a 200 stream, before content chunk number `at`.
STREAM_KINDS = {"stall", "disconnect", "truncate", "malformed", "error"}
OTHER_KINDS = {"slow", "filter"}


class FaultSpecError(ValueError):
    """A fault marker or script entry that cannot be understood."""


@dataclass(frozen=True)
class Fault:
    kind: str  # a STATUS/STREAM/OTHER kind, or "status" with an explicit code
    status: int = 0
    at: int = 0
    final: int = 0  # with a large `at`: how many closing events (finish chunk, message_delta...) go first
    ms: float | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    error_type: str = ""
    api: str = ""
    model: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def applies_to(self, api: str, model: str) -> bool:
        return (not self.api or self.api == api) and (not self.model or self.model == model)

    @property
    def in_stream(self) -> bool:
        return self.kind in STREAM_KINDS


def parse_fault(spec: str) -> Fault:
    """Parse `KIND key=value ...` (the text inside `[[fault:...]]`)."""
    words = spec.split()
    if not words:
        raise FaultSpecError("empty fault spec")
    head, opts = words[0].lower(), _options(words[1:])
    kind, status = _kind(head)
    try:
        return Fault(
            kind=kind,
            status=status,
            at=int(opts.pop("at", "0")),
            final=int(opts.pop("final", "0")),
            ms=_float(opts.pop("ms", None)),
            retry_after=_float(opts.pop("retry_after", None)),
            retry_after_ms=_float(opts.pop("retry_after_ms", None)),
            error_type=opts.pop("type", ""),
            api=opts.pop("api", ""),
            model=opts.pop("model", ""),
            options=opts,
        )
    except ValueError as exc:
        raise FaultSpecError(f"bad fault spec {spec!r}: {exc}") from exc


def _kind(head: str) -> tuple[str, int]:
    aliases = {"401": ("auth", 401), "403": ("auth", 403), "400": ("invalid", 400), "529": ("overloaded", 529)}
    if head in aliases:
        return aliases[head]
    if head in STATUS_KINDS | STREAM_KINDS | OTHER_KINDS:
        return head, 429 if head in ("429", "quota") else 0
    if head.isdigit() and 400 <= int(head) <= 599:
        return "status", int(head)
    raise FaultSpecError(f"unknown fault {head!r}")


def _options(words: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise FaultSpecError(f"fault option {word!r} is not key=value")
        opts[key.lower()] = value
    return opts


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def strip_markers(text: str) -> str:
    return " ".join(MARKER.sub(" ", text).split())
