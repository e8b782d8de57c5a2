"""Failures below the SDK, produced for real on 127.0.0.1 and mapped at each adapter's one boundary
(`map_error` -> `transport_failure`), on both stacks: connection refused, DNS failure, an untrusted
certificate, a reset mid-stream, a read timeout; and the transport settings that change them (a CA
bundle, a client certificate, proxies from the environment, connections per origin)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, Message, ProviderEvent, Role, TextDelta
from gateway_service.providers import ProviderAdapter, create_adapter
from gateway_service.providers import anthropic as anthropic_adapter
from gateway_service.providers import gemini as gemini_adapter
from gateway_service.providers import openai as openai_adapter
from gateway_service.providers.http import TransportSettings
from gateway_service.providers.streaming import provider_deadlines
from tests.gateway.rawhttp import (
    KEEP,
    RESET,
    Answer,
    Pki,
    chunk,
    closed_port,
    head,
    make_pki,
    raw_upstream,
    sse_body,
    sse_frames,
)
from tests.gateway.rawhttp import with_length as framed
from tests.gateway.test_provider_streams import config_for

STACKS = ["aiohttp", "httpx"]
KINDS = ["openai_compatible", "anthropic", "gemini", "cohere"]
MODULES = {"openai_compatible": openai_adapter, "anthropic": anthropic_adapter, "gemini": gemini_adapter}
pytestmark = pytest.mark.timeout(20)


def adapter_for(kind: str, base_url: str, stack: str, **transport: object) -> ProviderAdapter:
    config = config_for(kind, base_url, stack)
    return create_adapter(replace(config, transport=replace(config.transport, **transport)))  # type: ignore[arg-type]


async def call(adapter: ProviderAdapter) -> tuple[str, ProviderError | None]:
    events: list[ProviderEvent] = []
    request = ChatRequest(model="m", messages=(Message(Role.USER, "hi"),), request_id="t")
    try:
        async for event in adapter.stream(request, "m", deadlines=provider_deadlines(adapter.config, 5.0)):
            events.append(event)
    except ProviderError as error:
        return "".join(e.text for e in events if isinstance(e, TextDelta)), error
    finally:
        await adapter.aclose()
    return "".join(e.text for e in events if isinstance(e, TextDelta)), None


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", KINDS)
async def test_connection_refused_is_a_connection_error_not_a_timeout(kind: str, stack: str) -> None:
    port = await closed_port()
    _, error = await call(adapter_for(kind, f"http://127.0.0.1:{port}", stack))
    assert error is not None and error.kind is FailureKind.CONNECTION_ERROR, error
    assert error.message == f"connection refused by 127.0.0.1:{port}"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", KINDS)
async def test_dns_failure_names_the_host(kind: str, stack: str) -> None:
    # A name the system resolver refuses before asking any DNS server (a leading hyphen): no packet leaves.
    _, error = await call(adapter_for(kind, "http://-x-.invalid:8080", stack))
    assert error is not None and error.kind is FailureKind.CONNECTION_ERROR, error
    assert error.message.startswith("DNS: cannot resolve -x-.invalid:8080"), error.message


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", KINDS)
async def test_an_untrusted_certificate_names_the_host_and_a_ca_bundle_trusts_it(
    kind: str, stack: str, pki: Pki
) -> None:
    answer = Answer(framed(sse_body(kind, "SECURE")))
    async with raw_upstream(lambda n: answer, tls=pki.server_context()) as (_, port):
        url = f"https://127.0.0.1:{port}"
        _, error = await call(adapter_for(kind, url, stack))
        assert error is not None and error.kind is FailureKind.CONNECTION_ERROR, error
        assert error.message.startswith(f"TLS: the certificate of 127.0.0.1:{port} is not trusted ("), error.message
        assert await call(adapter_for(kind, url, stack, ca_bundle=str(pki.ca))) == ("SECURE", None)


@pytest.mark.parametrize("stack", STACKS)
async def test_a_client_certificate_is_presented(stack: str, pki: Pki) -> None:
    answer = Answer(framed(sse_body("openai_compatible", "MUTUAL")))
    async with raw_upstream(lambda n: answer, tls=pki.server_context(require_client_cert=True)) as (_, port):
        url = f"https://127.0.0.1:{port}"
        _, error = await call(adapter_for("openai_compatible", url, stack, ca_bundle=str(pki.ca)))
        assert error is not None and error.kind is FailureKind.CONNECTION_ERROR, error  # the server refused us
        mutual = adapter_for(
            "openai_compatible",
            url,
            stack,
            ca_bundle=str(pki.ca),
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
        )
        assert await call(mutual) == ("MUTUAL", None)


def test_unreadable_tls_files_fail_at_start_up_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match=f"cannot load TLS files \\({missing}\\)"):
        create_adapter(
            replace(
                config_for("openai", "http://127.0.0.1:1", "aiohttp"),
                transport=TransportSettings(ca_bundle=str(missing)),
            )
        )


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", KINDS)
async def test_reset_mid_stream_is_a_connection_error(kind: str, stack: str) -> None:
    frames = sse_frames(kind, "PARTIAL")
    upto = next(i for i, frame in enumerate(frames) if b"PARTIAL" in frame)
    sent = b"".join(frames[: upto + 1])  # the text event is whole, the rest never comes
    answer = Answer(head(b"transfer-encoding: chunked") + chunk(sent) + b"%x\r\n" % 500 + b"x" * 10, then=RESET)
    async with raw_upstream(lambda n: answer) as (_, port):
        text, error = await call(adapter_for(kind, f"http://127.0.0.1:{port}", stack))
    assert error is not None and error.kind is FailureKind.CONNECTION_ERROR, error
    assert text == "PARTIAL"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", list(MODULES))  # the httpx2 clients; cohere's httpx one: tests/gateway/test_cohere.py
async def test_read_timeout_below_the_sdk_is_a_timeout(kind: str, stack: str) -> None:
    """The stack's own read timeout (the Pacer's budgets are longer here), through the adapter's client."""
    silent = Answer(b"", then=KEEP)  # reads the request, never answers
    module = MODULES[kind]
    async with raw_upstream(lambda n: silent) as (_, port):
        client = module.http_client(TransportSettings(http_client=stack))
        try:
            with pytest.raises(httpx2.TimeoutException) as info:
                await client.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=httpx2.Timeout(5, read=0.1))
        finally:
            await client.aclose()
    error = module.map_error(info.value)
    assert error.kind is FailureKind.TIMEOUT and str(port) in error.message, error


@pytest.mark.parametrize("stack", STACKS)
async def test_proxies_from_the_environment(stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proxied, direct = Answer(framed(b"via proxy")), Answer(framed(b"direct"))
    async with raw_upstream(lambda n: proxied) as (proxy, proxy_port), raw_upstream(lambda n: direct) as (_, port):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = openai_adapter.http_client(TransportSettings(http_client=stack))
        try:
            via = await client.post("http://upstream.invalid/v1/x", content=b"{}", timeout=5)
            straight = await client.post(f"http://127.0.0.1:{port}/v1/x", content=b"{}", timeout=5)
        finally:
            await client.aclose()
    assert (via.text, straight.text) == ("via proxy", "direct")
    assert proxy.requests == 1


async def test_connections_per_origin_are_bounded() -> None:
    """max_connections: the third concurrent request waits for a connection instead of opening one."""
    gate = asyncio.Event()
    answered = 0

    def answer(n: int) -> Answer:
        nonlocal answered
        answered += 1
        return Answer(framed(b"ok"))

    async with raw_upstream(answer) as (upstream, port):
        client = openai_adapter.http_client(TransportSettings(max_connections=2))
        try:

            async def one() -> int:
                await gate.wait()
                return (await client.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=5)).status_code

            tasks = [asyncio.create_task(one()) for _ in range(6)]
            gate.set()
            assert await asyncio.gather(*tasks) == [200] * 6
        finally:
            await client.aclose()
    assert len(upstream.conns) <= 2 and upstream.requests == 6


@pytest.mark.parametrize("stack", STACKS)
async def test_idle_connections_expire(stack: str) -> None:
    async with raw_upstream(lambda n: Answer(framed(b"ok"))) as (upstream, port):
        client = openai_adapter.http_client(TransportSettings(http_client=stack, keepalive_expiry_s=0.0))
        try:
            for _ in range(2):
                await client.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=5)
        finally:
            await client.aclose()
    assert len(upstream.conns) == 2


async def test_one_access_line_per_upstream_request_after_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    """The gateway's access line replaces httpx2's per-request INFO line and is written once the attempt is over."""
    answer = Answer(framed(sse_body("openai_compatible", "LOGGED")))
    async with raw_upstream(lambda n: answer) as (_, port):
        with caplog.at_level(logging.INFO):
            text, error = await call(adapter_for("openai_compatible", f"http://127.0.0.1:{port}", "aiohttp"))
            refused = await closed_port()
            _, failure = await call(adapter_for("openai_compatible", f"http://127.0.0.1:{refused}", "aiohttp"))
    assert (text, error) == ("LOGGED", None) and failure is not None
    assert not [r for r in caplog.records if r.name == "httpx2" and r.levelno == logging.INFO]
    lines = [r for r in caplog.records if r.name == "gateway_service.upstream"]
    assert [(r.provider, r.model, r.outcome) for r in lines] == [  # type: ignore[attr-defined]
        ("openai_compatible", "m", "ok"),
        ("openai_compatible", "m", "connection_error"),
    ]
    assert all(r.levelno == logging.INFO and r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]
