"""Pieces shared by the three wire formats."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Frame:
    """One SSE event. `content` frames are counted by a fault's `at=`; `final` ones close the answer."""

    data: bytes
    kind: Literal["pre", "content", "final"]


def sse(payload: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def signature(text: str) -> str:
    """A stable stand-in for the opaque reasoning signatures providers hand out."""
    return "sig_" + hashlib.sha256(text.encode()).hexdigest()[:24]
