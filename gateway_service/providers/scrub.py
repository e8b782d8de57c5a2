"""Remove anything that looks like a credential from text that leaves the process, and bound its length.

Provider error messages sometimes echo the key that was sent ("Incorrect API key provided: sk-abc..."),
a URL with `?key=...`, or an Authorization header; a hostile upstream may put the key anywhere, in any
encoding, in an error or in an id (x-request-id, a chunk id, a message id). Such text reaches callers
(Failover.message, Attempt.message, ListProviders.last_error, upstream_request_id), logs and spans, so
every string from an upstream passes through `scrub` (or `scrub_id`) first.

A configured key is found by construction rather than by listing its forms: the text is decoded into
views, and any run of 12 or more characters of the key (or of the key reversed) found in a view is
removed from the text where the view took it from:

    the plain view    percent-encoding decoded (urllib.parse.unquote: every byte, or only `-`), HTML
                      entities (html.unescape), compatibility forms folded (NFKC: full-width letters),
                      then only letters and digits kept, lower-cased: so any case, any separators
                      (s k - a b, s.k.-, four spaces apart, hex bytes with colons) fall together
    the hex view      the same letters and digits, searched for the key's bytes in hex
    the base64 view   each run of base64 characters, line breaks and spaces inside it allowed (wrapped
                      base64), decoded (base64 and base64url, at each alignment), searched for the key's
                      bytes and their reverse

Then a key masked as providers print it (`sk-abcd****wxyz`: a prefix of the key, a run of *, . or x, a
suffix or nothing), and key-shaped strings of any provider (`_PATTERNS`), are removed, and the result is
cut to `limit` characters (after scrubbing, so a cut can never leave a piece of a key behind).
tests/gateway/test_scrub.py holds the corpus of forms.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from urllib.parse import unquote

REDACTED = "[REDACTED]"
# Longest upstream text kept: enough for any provider's error sentence, small enough for logs and trailers.
MAX_UPSTREAM_TEXT_CHARS = 500
# Longest upstream id kept (request ids, chunk and message ids, tool-call ids are far shorter).
MAX_UPSTREAM_ID_CHARS = 200
# Only this much of a text is scanned (and so can be kept), well over what is kept: the views cost a few
# passes in Python over it, which run on the event loop (about 1 ms for 2,048 characters).
_MAX_SCANNED_CHARS = 2048
# A run of this many characters of a key gives it away; shorter keys are looked for whole.
_PIECE = 12
# Keys shorter than this are only removed as they are (their pieces would match ordinary words).
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
# What the plain view reads as one unit: a run of ASCII letters and digits, of ASCII punctuation, of
# percent-escapes (one UTF-8 sequence may span several), an HTML character reference, or one character.
_UNITS = re.compile(
    r"[A-Za-z0-9]+"  # letters and digits as they are
    r"|[ -$'-/:-@\[-`{-~\s]+"  # ASCII punctuation and spaces but % and &: dropped from the view
    r"|(?:%[0-9A-Fa-f]{2})+"
    r"|&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?"
    r"|.",
    re.S,
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-](?:[A-Za-z0-9+/_\-=]|\r?\n)*")  # line breaks inside: wrapped

Span = tuple[int, int]


def scrub(text: str, secrets: Iterable[str | None] = (), *, limit: int = MAX_UPSTREAM_TEXT_CHARS) -> str:
    """`text` without the secrets (in any form above) or key-like strings, at most `limit` characters."""
    text = text[: max(_MAX_SCANNED_CHARS, 2 * limit)]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = _remove_secret(text, secret)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub_id(value: object, secrets: Iterable[str | None] = ()) -> str:
    """An upstream's id (request, chunk, message, tool call) as it may leave: a string, scrubbed, bounded."""
    if not isinstance(value, str) or not value:
        return ""
    return scrub(value[: _MAX_SCANNED_CHARS // 8], secrets, limit=MAX_UPSTREAM_ID_CHARS)


def _remove_secret(text: str, secret: str) -> str:
    text = text.replace(secret, REDACTED)
    if len(secret) < _MIN_SECRET_CHARS:
        return text
    text = _cut(text, [*_plain_hits(text, secret), *_base64_hits(text, secret)])
    return _MASKED.sub(lambda m: REDACTED if _is_masked(m, secret) else m.group(0), text)


def _plain_view(text: str) -> tuple[str, list[int], list[int]]:
    """The letters and digits `text` decodes to, lower-cased, and for each the span of `text` it came from
    (as two lists: starts and ends)."""
    view: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for unit in _UNITS.finditer(text):
        raw, (start, end) = unit.group(0), unit.span()
        if raw.isascii() and raw.isalnum():  # the common case, without decoding: each character is itself
            view.append(raw.lower())
            starts += range(start, end)
            ends += range(start + 1, end + 1)
            continue
        if raw.isascii() and raw[0] not in "%&" and not raw.isalnum():  # ASCII punctuation and spaces
            continue
        decoded = unquote(raw) if raw[0] == "%" else html.unescape(raw) if raw[0] == "&" else raw
        for char in unicodedata.normalize("NFKC", decoded).casefold():
            if char.isalnum():
                view.append(char)
                starts.append(start)
                ends.append(end)
    return "".join(view), starts, ends


def _overlapping(pieces: Iterable[str]) -> re.Pattern[str]:
    """A pattern matching (empty, its group 1 the piece) at every position where one of `pieces` starts,
    overlaps included, so the spans of all the matches cover the whole of a key's occurrence."""
    ordered = sorted(set(pieces), key=len, reverse=True)
    return re.compile("(?=(" + "|".join(re.escape(p) for p in ordered) + "))")


def _overlapping_bytes(pieces: Iterable[bytes]) -> re.Pattern[bytes]:
    ordered = sorted(set(pieces), key=len, reverse=True)
    return re.compile(b"(?=(" + b"|".join(re.escape(p) for p in ordered) + b"))")


@lru_cache(maxsize=64)
def _plain_pattern(secret: str) -> re.Pattern[str]:
    """Every run of _PIECE letters and digits of the key and of its reverse (plain view), and of its bytes in hex."""
    plain, _, _ = _plain_view(secret)
    size = min(_PIECE, len(plain))
    pieces = {form[i : i + size] for form in (plain, plain[::-1]) for i in range(len(form) - size + 1)}
    raw = secret.encode()
    hexed = {raw[i : i + _PIECE].hex() for i in range(max(1, len(raw) - _PIECE + 1))}
    return _overlapping(pieces | hexed)


def _plain_hits(text: str, secret: str) -> Iterator[Span]:
    view, starts, ends = _plain_view(text)
    for match in _plain_pattern(secret).finditer(view):
        yield starts[match.start()], ends[match.start() + len(match.group(1)) - 1]


@lru_cache(maxsize=64)
def _byte_pattern(secret: str) -> tuple[re.Pattern[bytes], int]:
    raw = secret.encode()
    size = min(_PIECE, len(raw))
    pieces = (form[i : i + size] for form in (raw, raw[::-1]) for i in range(len(form) - size + 1))
    return _overlapping_bytes(pieces), size


def _base64_hits(text: str, secret: str) -> Iterator[Span]:
    """Spans of base64 runs (wrapped or not, either alphabet, any alignment) whose bytes hold a key piece."""
    pattern, size = _byte_pattern(secret)
    for run in _BASE64_RUN.finditer(text):
        if run.end() - run.start() < size * 4 // 3:
            continue
        where = [run.start() + i for i, c in enumerate(run.group(0)) if c not in "\r\n="]
        letters = "".join(text[i] for i in where).translate(_URLSAFE)
        for align in range(4):
            usable = (len(letters) - align) // 4 * 4
            try:
                data = base64.b64decode(letters[align : align + usable], validate=True)
            except binascii.Error:
                continue
            for match in pattern.finditer(data):
                j = match.start()
                last = min(align + ((j + size) * 4 + 2) // 3, len(where)) - 1
                yield where[align + j * 4 // 3], where[last] + 1


_URLSAFE = str.maketrans("-_", "+/")


def _cut(text: str, spans: list[Span]) -> str:
    """`text` with each span replaced by REDACTED, overlapping spans as one."""
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    out: list[str] = []
    end = 0
    for start, stop in merged:
        out += [text[end:start], REDACTED]
        end = stop
    out.append(text[end:])
    return "".join(out)


def _is_masked(match: re.Match[str], secret: str) -> bool:
    head, tail = match.group(1), match.group(2)
    if not secret.startswith(head):
        return False
    # A head alone gives away little unless it is long; with a tail, both must be the key's own ends.
    return secret.endswith(tail) if tail else len(head) >= 6


def _replacement(match: re.Match[str]) -> str:
    # The api_key pattern captures its separator so that "api_key: X" keeps "api_key: ".
    if match.re.groups:
        return f"{match.group(1)}{REDACTED}"
    return REDACTED
