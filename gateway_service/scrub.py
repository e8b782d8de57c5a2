"""Remove anything that looks like a credential from text that leaves the process.

Provider error messages sometimes echo the key that was sent ("Incorrect API key
provided: sk-abc..."), a URL with `?key=...`, or an Authorization header. Such text
reaches callers (Failover.message, Attempt.message) and logs, so every provider
error passes through `scrub` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

_PATTERNS: tuple[re.Pattern[str], ...] = (
    # OpenAI / Anthropic / Groq / Together style secret keys.
    re.compile(r"\b(?:sk|pk|rk|gsk|xai)-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{6,}"),
    # Google API keys.
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),
    # Bearer tokens in echoed headers.
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9_\-\.=:/+]{8,}"),
    # key=..., api_key: "...", x-api-key=... in URLs, JSON and prose.
    re.compile(r"(?i)(?<=[?&]key=)[^&\s\"']+"),
    re.compile(r"(?i)(?<=api[_-]key)([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]{6,}"),
    # Long opaque tokens (JWTs, hex or base64 secrets) that contain both letters and digits.
    re.compile(r"\b(?=[A-Za-z0-9_\-\.]*\d)(?=[A-Za-z0-9_\-\.]*[A-Za-z])[A-Za-z0-9_\-\.]{40,}\b"),
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with known secrets and key-like strings replaced by [REDACTED]."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    # The api_key pattern captures its separator so that "api_key: X" keeps "api_key: ".
    if match.re.groups:
        return f"{match.group(1)}{REDACTED}"
    return REDACTED
