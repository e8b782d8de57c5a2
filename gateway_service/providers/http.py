"""The HTTP stack under each SDK, built from a provider's TransportSettings.

`http_client: aiohttp` (the default) gives the SDK its aiohttp-backed httpx2 client:
`openai.DefaultAioHttpClient`, `anthropic.DefaultAioHttpClient`, and for google-genai
`httpx_aiohttp.httpx2.Httpx2AiohttpClient` (the project those two vendor). aiohttp parses HTTP/1.1
with llhttp, frames every response or refuses it, and never returns a connection with unread bytes
to its pool. `http_client: httpx` keeps the SDK's own httpx2 stack (httpcore2 + h11): the way back.

The SDKs keep everything above HTTP (requests, SSE, their errors). Both stacks take the same
settings through httpx2.AsyncClient's public arguments: connections per origin and keep-alive expiry
(`limits`), the trusted CAs and a client certificate (`verify`, an ssl.SSLContext built here), and
proxies from the environment (`trust_env`: httpx2 reads HTTP(S)_PROXY / ALL_PROXY / NO_PROXY and
mounts a transport of the same stack per proxy).

Two things neither parser refuses are refused here, by a response hook on the client: a transfer
coding other than `chunked` (the body would run to the close, undecodable) and, on the httpx stack
(aiohttp does not report the version), a status line that is not HTTP/1.x. And the httpx stack never
reuses a connection: h11 keeps whatever bytes follow a response (a smuggled second response, or one
sent before the request) and hands them to the next request on that connection, another caller's.
tests/gateway/test_http_framing.py shows both, on both stacks.

A second hook caps what the upstream may send, on the bytes as they are read, and refuses a redirect to
another origin (providers/bounds.py). With tracing on, hooks on the same client give each request its
CLIENT span (providers/http_spans.py). The last hook hands every response's headers to the attempt that
sent it (domain/headers.py), whose target's headroom they state (health/headroom.py).
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
from opentelemetry import trace

from gateway_service.config.providers import DEFAULT_TRANSPORT
from gateway_service.domain.headers import response_headers
from gateway_service.providers.bounds import Bounds, Caps, ask_identity
from gateway_service.providers.http_spans import HttpSpans

HTTP_CLIENTS = ("aiohttp", "httpx")


@dataclass(frozen=True)
class TransportSettings:
    """How one provider's SDK reaches its upstream."""

    # The defaults are the config's, written once (config/providers.py ProviderTransport).
    http_client: str = DEFAULT_TRANSPORT.http_client  # aiohttp: the SDK's aiohttp-backed client | httpx: its own
    max_connections: int = DEFAULT_TRANSPORT.max_connections  # per provider, hence per origin: one base URL each
    keepalive_expiry_s: float = DEFAULT_TRANSPORT.keepalive_expiry_s  # an idle connection older is closed
    ca_bundle: str | None = None  # PEM file of the CAs to trust instead of the default ones
    client_cert: str | None = None  # PEM certificate (chain) presented to the upstream (mutual TLS)
    client_key: str | None = None  # its private key, when not in client_cert's file
    # What the upstream may send (providers/bounds.py), in bytes.
    max_sse_line_bytes: int = DEFAULT_TRANSPORT.max_sse_line_bytes
    max_sse_event_bytes: int = DEFAULT_TRANSPORT.max_sse_event_bytes
    max_body_bytes: int = DEFAULT_TRANSPORT.max_body_bytes
    max_response_bytes: int = DEFAULT_TRANSPORT.max_response_bytes
    # A CLIENT span per request (providers/http_spans.py) when tracing is on; None: no hook at all.
    tracer: trace.Tracer | None = None

    def __post_init__(self) -> None:
        if self.http_client not in HTTP_CLIENTS:
            raise ValueError(f"http_client must be one of {', '.join(HTTP_CLIENTS)}, not {self.http_client!r}")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.keepalive_expiry_s < 0:
            raise ValueError("keepalive_expiry_s must not be negative")
        if self.client_key and not self.client_cert:
            raise ValueError("client_key needs client_cert")
        if min(self.max_sse_line_bytes, self.max_sse_event_bytes, self.max_body_bytes, self.max_response_bytes) < 1:
            raise ValueError("the max_*_bytes caps must be at least 1")

    @property
    def aiohttp(self) -> bool:
        return self.http_client == "aiohttp"

    @property
    def caps(self) -> Caps:
        return Caps(self.max_sse_line_bytes, self.max_sse_event_bytes, self.max_body_bytes, self.max_response_bytes)


def ssl_context(settings: TransportSettings) -> ssl.SSLContext:
    """The TLS context both stacks use: default CAs (honouring SSL_CERT_FILE / SSL_CERT_DIR, as httpx2
    does) or the configured bundle, plus the client certificate. A file that cannot be read fails here,
    at start-up, with the file named."""
    return _ssl_context(settings.ca_bundle, settings.client_cert, settings.client_key)


@functools.lru_cache(maxsize=32)
def _ssl_context(ca_bundle: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext:
    # One context per set of files, shared by every provider using them: loading the CAs costs 10-100 ms
    # of CPU, and a context serves any number of connections.
    try:
        if ca_bundle:
            context = ssl.create_default_context(cafile=ca_bundle)
        else:
            context = httpx2.create_ssl_context()
        if client_cert:
            context.load_cert_chain(client_cert, client_key)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (ca_bundle, client_cert, client_key) if f)
        raise ValueError(f"cannot load TLS files ({files}): {exc}") from exc
    return context


RequestHook = Callable[[httpx2.Request], Awaitable[None]]
ResponseHook = Callable[[httpx2.Response], Awaitable[None]]


# The SDKs and the HTTP stacks under them log whole requests at DEBUG: the prompt, its tool arguments, the
# request options (openai, anthropic: "Request options: {... json_data ...}"), headers. They are kept at INFO
# or above, whatever the root level, so LOG_LEVEL=DEBUG shows the gateway's own lines but no prompt.
SDK_LOGGERS = (
    "openai",
    "anthropic",
    "google_genai",
    "google.genai",
    "cohere",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
)


def quiet_sdk_request_log() -> None:
    """httpx2 logs every request at INFO as its response head arrives, on the way to the first token; the
    gateway's own access line (providers/streaming.py) replaces it, written after the attempt. WARNING and
    above from httpx2 still pass. The other SDK loggers stay at INFO at least (no prompts at DEBUG)."""
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherit the root's DEBUG) or DEBUG
            logger.setLevel(logging.INFO)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the same line from cohere's client (httpx, not httpx2)


def client_options(
    settings: TransportSettings, request_hooks: Sequence[RequestHook] = (), response_hooks: Sequence[ResponseHook] = ()
) -> dict[str, Any]:
    """httpx2.AsyncClient keyword arguments for either stack (the adapter picks the client class)."""
    quiet_sdk_request_log()
    limits = httpx2.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_connections if settings.aiohttp else 0,  # see the module doc
        keepalive_expiry=settings.keepalive_expiry_s,
    )
    # The caps right after refuse_unframed: they refuse on the head alone too, and wrap the body first, so the
    # span's wrapper (outside theirs) sees a cap's failure.
    requests = [ask_identity, *request_hooks]
    responses = [refuse_unframed, Bounds(settings.caps).on_response, *response_hooks, tell_headers]
    if settings.tracer is not None:
        spans = HttpSpans(settings.tracer)
        # Last of the request hooks: the span starts as the request leaves. Right after the refusals: a
        # refused response is a request that got no (usable) response, ended as such by drive().
        requests.append(spans.on_request)
        responses.insert(2, spans.on_response)
    hooks = {"request": requests, "response": responses}
    return {"limits": limits, "verify": ssl_context(settings), "trust_env": True, "event_hooks": hooks}


async def tell_headers(response: httpx2.Response) -> None:
    """Hand the response's headers to the attempt that sent the request, if it listens (a 429's too)."""
    sink = response_headers.get()
    if sink is not None:
        sink(response.headers)


async def refuse_unframed(response: httpx2.Response) -> None:
    """Refuse a response neither stack should have framed: closing it closes its connection."""
    coding = response.headers.get("transfer-encoding")
    problem = ""
    if coding is not None and coding.strip().lower() != "chunked":
        problem = f"unsupported Transfer-Encoding {coding[:40]!r}"
    elif response.http_version not in ("HTTP/1.1", "HTTP/1.0"):
        problem = f"not an HTTP/1.x response ({response.http_version[:20]})"
    if problem:
        await response.aclose()
        raise httpx2.RemoteProtocolError(f"{problem} from {response.url.host}", request=response.request)
