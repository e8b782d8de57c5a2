"""A hostile upstream that echoes the API key in any recognisable form (raw, URL-encoded, base64, hex, masked as
providers print it, reversed, spaced) never gets it through: not to failover events, ListProviders.last_error,
nor the logs; and upstream text is capped in length."""

from __future__ import annotations

import base64
import logging
import textwrap
from collections.abc import AsyncIterator

import pytest

from gateway_service.providers.scrub import MAX_UPSTREAM_ID_CHARS, MAX_UPSTREAM_TEXT_CHARS, REDACTED, scrub, scrub_id
from llm_simulator import SimulatorHandle
from llm_simulator.wire_openai import echo_key
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import provider_service_pb2
from servicekit.logs import JsonFormatter
from tests.gateway.e2e_helpers import Harness, Upstream, gateway, stream, user

pytestmark = pytest.mark.timeout(60)

KEY = "sk-live-Q7vXk2Lm9Rt4+Wz8wxyz"  # shorter than the generic 40-character token rule; "+" URL-encodes
FORMS = ("raw", "urlencoded", "base64", "basic", "masked", "reversed", "spaced", "upper", "hex")


def leaks(text: str) -> list[str]:
    """The forms of KEY (and long pieces of it) still present in `text`."""
    pieces = {form: echo_key(KEY, form) for form in FORMS}
    pieces |= {"head": KEY[:12], "tail": KEY[-12:], "reversed head": KEY[::-1][:12]}
    return [name for name, piece in pieces.items() if piece in text]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_of_the_configured_key_is_scrubbed(form: str) -> None:
    text = f"Incorrect API key provided: {echo_key(KEY, form)}. You can find your API key at https://x/keys."
    cleaned = scrub(text, [KEY])
    assert leaks(cleaned) == [] and REDACTED in cleaned, cleaned
    assert cleaned.endswith("You can find your API key at https://x/keys.")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Every form the scrubber must hold (issue #18, point 8), beyond echo_key's: each decoded by the standard
# library in the scrubber (urllib.parse, html, unicodedata), none by a decoder of its own.
CORPUS = {
    "percent-every-byte": "".join(f"%{b:02X}" for b in KEY.encode()),
    "percent-only-dash": KEY.replace("-", "%2D"),
    "percent-lower": "".join(f"%{b:02x}" for b in KEY.encode()),
    "html-decimal": "".join(f"&#{ord(c)};" for c in KEY),
    "html-hex-and-named": "".join("&plus;" if c == "+" else f"&#x{ord(c):x};" for c in KEY),
    "full-width": "".join(chr(ord(c) + 0xFEE0) for c in KEY),
    "hex-colons": ":".join(f"{b:02x}" for b in KEY.encode()),
    "hex-spaced-upper": " ".join(f"{b:02X}" for b in KEY.encode()),
    "four-spaces-apart": "    ".join(KEY),
    "tabs-and-newlines": "\t\n".join(KEY),
    "base64-wrapped": "\n".join(textwrap.wrap(b64(KEY.encode()), 10)),
    "base64-crlf-wrapped": "\r\n".join(textwrap.wrap(b64(f"user:{KEY}".encode()), 8)),
    "base64-reversed": b64(KEY[::-1].encode()),
    "base64url-unpadded": b64(KEY.encode()).replace("+", "-").replace("/", "_").rstrip("="),
    "second-half": KEY[len(KEY) // 2 :],
    "first-12": KEY[:12],
    "middle-12": KEY[8:20],
    "reversed-spaced": " ".join(KEY[::-1]),
    "mixed-case-dotted": ".".join(KEY.swapcase()),
}


def pieces_left(text: str) -> list[str]:
    """Runs of 12 characters of KEY (or of it reversed) still in `text` as they are."""
    forms = (KEY, KEY[::-1])
    return [f[i : i + 12] for f in forms for i in range(len(f) - 11) if f[i : i + 12] in text]


@pytest.mark.parametrize("form", sorted(CORPUS))
def test_the_corpus_of_forms_is_scrubbed(form: str) -> None:
    leaked = CORPUS[form]
    text = f"Incorrect API key provided: {leaked}. You can find your API key at https://x/keys."
    cleaned = scrub(text, [KEY])
    assert REDACTED in cleaned and leaked not in cleaned and pieces_left(cleaned) == [], cleaned
    assert cleaned.startswith("Incorrect API key provided: ") and cleaned.endswith("at https://x/keys."), cleaned


@pytest.mark.parametrize("form", sorted(CORPUS))
def test_an_id_holding_the_key_in_any_form_is_scrubbed(form: str) -> None:
    cleaned = scrub_id(f"chatcmpl-{CORPUS[form]}", [KEY])
    assert CORPUS[form] not in cleaned and pieces_left(cleaned) == [] and REDACTED in cleaned, cleaned


def test_an_id_is_bounded_and_only_a_string() -> None:
    assert len(scrub_id("a" * (1 << 20))) == MAX_UPSTREAM_ID_CHARS
    assert scrub_id("req_123abc") == "req_123abc"
    assert scrub_id(None) == "" and scrub_id(12) == "" and scrub_id({"id": KEY}) == ""


@pytest.mark.parametrize(
    "text",
    [
        f"auth header was 'Basic {echo_key(KEY, 'basic')}'",
        f"key(b64url)={echo_key(KEY, 'base64').replace('+', '-').replace('/', '_').rstrip('=')}",
        f"masked: {KEY[:5]}...{KEY[-4:]} and {KEY[:10]}**********",
        f"dotted {'.'.join(KEY)} and dashed {'-'.join(KEY[::-1])}",
    ],
)
def test_variants_inside_other_text_are_scrubbed(text: str) -> None:
    cleaned = scrub(text, [KEY])
    assert leaks(cleaned) == [] and KEY[:5] + "..." not in cleaned, cleaned


def test_ordinary_text_is_kept_and_long_text_is_capped() -> None:
    ordinary = "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, used 3. Retry in 20s."
    assert scrub(ordinary, [KEY]) == ordinary
    capped = scrub("overloaded " * 10_000 + KEY, [KEY])
    assert len(capped) == MAX_UPSTREAM_TEXT_CHARS and capped.endswith("...")


@pytest.fixture  # a gateway each: the 401 puts the leaky provider in a cooldown
async def h(sim: SimulatorHandle) -> AsyncIterator[Harness]:
    upstreams = [Upstream("leaky", "openai", "gpt-4o-mini"), Upstream("good", "anthropic", "claude", patient=True)]
    async with gateway(sim, upstreams, env={"SIM_KEY": KEY}) as harness:
        yield harness


@pytest.mark.parametrize("form", FORMS)
async def test_no_form_of_the_key_reaches_failover_events_provider_state_or_logs(
    h: Harness, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = pb.StreamChatRequest(model="default", messages=user(f"hi [[fault:401 echo={form} api=openai]]"))
    with caplog.at_level(logging.DEBUG):
        events = await stream(h, request)
        listed = await h.providers.ListProviders(provider_service_pb2.ListProvidersRequest())
    failovers = [e.failover for e in events if e.HasField("failover")]
    assert len(failovers) == 1 and events[-1].HasField("done")
    assert REDACTED in failovers[0].message
    last_error = next(p.last_error for p in listed.providers if p.name == "leaky")
    assert REDACTED in last_error
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert "Incorrect API key" in logged  # the failover was logged, scrubbed
    assert leaks(failovers[0].message) == [] and leaks(last_error) == [] and leaks(logged) == []
