"""What the adapters share to write image and document parts: base64 and `data:` URLs (RFC 2397)."""

from __future__ import annotations

import base64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(media_type: str, data: bytes) -> str:
    """`data:<media type>;base64,<data>`: how OpenAI-style APIs take inline images and files."""
    return f"data:{media_type};base64,{b64(data)}"
