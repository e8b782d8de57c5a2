"""Timeouts that always fire: an upstream streaming fast forever is cut by the provider's `timeout_s` and the
request's deadline exactly as a slow one is (issue #18, point 6).

A fast stream used to run on: each read found its bytes buffered and returned without suspending, so the
watchdog's timer always fired between reads, with nothing to cancel (providers/watchdog.py). The guard
`asyncio.timeout(GUARD_S)` fails the test instead of letting it run on: the limits under test are 0.3 to 1 s. The
adapter is made before it: the first SDK client of a process imports for seconds on a loaded machine.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway_service.domain.failures import FailureKind
from gateway_service.domain.request import TextDelta
from tests.gateway.rawhttp import Answer, raw_upstream
from tests.hostile.upstream import KINDS, STACKS, adapter, endless, opening, read, text_frame

GUARD_S = 5.0
pytestmark = [pytest.mark.timeout(20), pytest.mark.parametrize("stack", STACKS), pytest.mark.parametrize("kind", KINDS)]


async def test_timeout_s_cuts_a_fast_endless_stream(kind: str, stack: str) -> None:
    async with raw_upstream(lambda _: Answer(endless(kind, text_frame(kind, "word ")))) as (_, port):
        # 1 s, not 0.3: the whole attempt counts, and on a loaded machine the first text can take 0.3 s to come.
        provider = adapter(kind, port, stack, timeout_s=1.0)
        async with asyncio.timeout(GUARD_S):
            events, error = await read(provider)
    assert error is not None and error.kind is FailureKind.TIMEOUT, error
    assert error.message == "attempt deadline reached"
    assert any(isinstance(e, TextDelta) for e in events)  # it was streaming, fast, when it was cut


async def test_the_request_deadline_cuts_a_fast_endless_stream(kind: str, stack: str) -> None:
    async with raw_upstream(lambda _: Answer(endless(kind, text_frame(kind, "word ")))) as (_, port):
        provider = adapter(kind, port, stack, timeout_s=30.0)
        async with asyncio.timeout(GUARD_S):
            _, error = await read(provider, deadline_s=0.3)
    assert error is not None and error.kind is FailureKind.TIMEOUT, error
    assert error.message == "attempt deadline reached"


def empty_frame(kind: str) -> bytes:
    """A chunk that parses but carries no output: Anthropic's ping event, an empty text delta of the others."""
    return b'event: ping\ndata: {"type": "ping"}\n\n' if kind == "anthropic" else text_frame(kind, "")


async def test_the_idle_timeout_cuts_a_fast_endless_stream_of_empty_chunks(kind: str, stack: str) -> None:
    # First text, then empty chunks as fast as they are read: each used to reset the idle timer, so only the
    # first-token or total timeout (here 30 s) could end the attempt.
    start = opening(kind) + text_frame(kind, "word ")
    async with raw_upstream(lambda _: Answer(endless(kind, empty_frame(kind), start=start))) as (_, port):
        provider = adapter(kind, port, stack, timeout_s=30.0, first_token_timeout_s=30.0, idle_timeout_s=0.3)
        async with asyncio.timeout(GUARD_S):
            events, error = await read(provider, deadline_s=30.0)
    assert error is not None and error.kind is FailureKind.TIMEOUT, error
    assert error.message == "no output for 0.3s (idle timeout)"
    assert [e for e in events if isinstance(e, TextDelta) and e.text] == [TextDelta("word ")]


async def test_empty_chunks_before_any_output_are_cut_by_the_first_token_timeout(kind: str, stack: str) -> None:
    async with raw_upstream(lambda _: Answer(endless(kind, empty_frame(kind)))) as (_, port):
        provider = adapter(kind, port, stack, timeout_s=30.0, first_token_timeout_s=0.3, idle_timeout_s=0.1)
        async with asyncio.timeout(GUARD_S):
            events, error = await read(provider, deadline_s=30.0)
    assert error is not None and error.kind is FailureKind.TIMEOUT, error
    assert error.message == "no first token within 0.3s"
    assert not [e for e in events if isinstance(e, TextDelta) and e.text]
