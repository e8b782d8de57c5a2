"""Remove anything that looks like a credential from text that leaves the process, and bound its length.

Provider error messages sometimes echo the key that was sent ("Incorrect API key provided: sk-abc..."),
a URL with `?key=...`, or an Authorization header. Such text reaches callers (Failover.message,
Attempt.message, ListProviders.last_error) and logs, so every provider error passes through `scrub` first.

A configured key is removed in every form a hostile or careless upstream may print it:

    raw, any letter case              sk-abcd1234...
    URL-encoded (quote, quote_plus)   sk-abcd%2B12...
    base64 / base64url, at any offset inside a larger encoded value ("Basic dXNlcjpzay1h...")
    hex                               736b2d61...
    reversed                          ...4321dcba-ks
    spaced or punctuated              s k - a b c d ...   s.k.-.a.b...
    masked as providers print it      sk-abcd****wxyz   sk-ab...wxyz   sk-abcd**********
                                      (a prefix of the key, a run of *, . or x, then a suffix or nothing)

Then key-shaped strings of any provider are removed (`_PATTERNS`), and the result is cut to `limit`
characters (after scrubbing, so a cut can never leave half a key behind).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
# Longest upstream text kept: enough for any provider's error sentence, small enough for logs and trailers.
MAX_UPSTREAM_TEXT_CHARS = 500
# Text longer than this is cut before scrubbing (the regular expressions are linear, but need not read megabytes).
_MAX_SCANNED_CHARS = 64 * 1024
# Keys shorter than this are not looked for in derived forms (they would match ordinary words).
_MIN_SECRET_CHARS = 8

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
# A masked key: a visible head, a run of mask characters, maybe a visible tail.
_MASKED = re.compile(r"([A-Za-z0-9_\-]{3,})(?:\*{2,}|\.{3,}|…|x{4,}|•{2,})([A-Za-z0-9_\-]*)")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]+=*")


def scrub(text: str, secrets: Iterable[str | None] = (), *, limit: int = MAX_UPSTREAM_TEXT_CHARS) -> str:
    """`text` without the secrets (in any form above) or key-like strings, at most `limit` characters."""
    text = text[:_MAX_SCANNED_CHARS]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = _remove_secret(text, secret)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remove_secret(text: str, secret: str) -> str:
    text = text.replace(secret, REDACTED)
    if len(secret) < _MIN_SECRET_CHARS:
        return text
    for pattern in _secret_patterns(secret):
        text = pattern.sub(REDACTED, text)
    text = _MASKED.sub(lambda m: REDACTED if _is_masked(m, secret) else m.group(0), text)
    return _BASE64_RUN.sub(lambda m: REDACTED if _holds_base64(m.group(0), secret) else m.group(0), text)


@lru_cache(maxsize=64)
def _secret_patterns(secret: str) -> tuple[re.Pattern[str], ...]:
    """Literal forms (encoded, reversed), and the key or its reverse with up to 3 separators between characters."""
    raw = secret.encode()
    literal = {quote(secret, safe=""), quote_plus(secret), raw.hex(), raw.hex().upper(), secret[::-1]}
    spaced = [r"[^A-Za-z0-9]{0,3}".join(re.escape(c) for c in form) for form in (secret, secret[::-1])]
    return (
        re.compile("|".join(re.escape(f) for f in sorted(literal, key=len, reverse=True))),
        re.compile("|".join(spaced), re.IGNORECASE),
    )


def _is_masked(match: re.Match[str], secret: str) -> bool:
    head, tail = match.group(1), match.group(2)
    if not secret.startswith(head):
        return False
    # A head alone gives away little unless it is long; with a tail, both must be the key's own ends.
    return secret.endswith(tail) if tail else len(head) >= 6


@lru_cache(maxsize=64)
def _base64_cores(secret: str) -> tuple[str, ...]:
    """For each of the 3 byte offsets and both alphabets: the base64 characters that depend only on the key."""
    raw, cores = secret.encode(), []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        # Drop the characters shared with the bytes before and after the key.
        start = (offset * 8 + 5) // 6
        end = (offset + len(raw)) * 8 // 6
        core = encoded[start:end]
        if len(core) >= 8:
            cores += [core, core.replace("+", "-").replace("/", "_")]
    return tuple(cores)


def _holds_base64(run: str, secret: str) -> bool:
    return len(run) >= 8 and any(core in run for core in _base64_cores(secret))


def _replacement(match: re.Match[str]) -> str:
    # The api_key pattern captures its separator so that "api_key: X" keeps "api_key: ".
    if match.re.groups:
        return f"{match.group(1)}{REDACTED}"
    return REDACTED
