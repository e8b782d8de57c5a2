"""Timeouts that always fire: an upstream streaming fast forever is cut by the provider's `timeout_s` and the
request's deadline exactly as a slow one is (issue #18, point 6).

A fast stream used to run on: each read found its bytes buffered and returned without suspending, so the
watchdog's timer always fired between reads, with nothing to cancel (providers/watchdog.py). The guard
`asyncio.timeout(GUARD_S)` fails the test instead of letting it run on: the limits under test are 0.3 s.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway_service.domain.failures import FailureKind
from gateway_service.domain.request import TextDelta
from tests.gateway.rawhttp import Answer, raw_upstream
from tests.hostile.upstream import KINDS, STACKS, adapter, endless, read, text_frame

GUARD_S = 5.0
pytestmark = [pytest.mark.timeout(20), pytest.mark.parametrize("stack", STACKS), pytest.mark.parametrize("kind", KINDS)]


async def test_timeout_s_cuts_a_fast_endless_stream(kind: str, stack: str) -> None:
    async with raw_upstream(lambda _: Answer(endless(kind, text_frame(kind, "word ")))) as (_, port):
        async with asyncio.timeout(GUARD_S):
            events, error = await read(adapter(kind, port, stack, timeout_s=0.3))
    assert error is not None and error.kind is FailureKind.TIMEOUT, error
    assert error.message == "attempt deadline reached"
    assert any(isinstance(e, TextDelta) for e in events)  # it was streaming, fast, when it was cut


async def test_the_request_deadline_cuts_a_fast_endless_stream(kind: str, stack: str) -> None:
    async with raw_upstream(lambda _: Answer(endless(kind, text_frame(kind, "word ")))) as (_, port):
        async with asyncio.timeout(GUARD_S):
            _, error = await read(adapter(kind, port, stack, timeout_s=30.0), deadline_s=0.3)
    assert error is not None and error.kind is FailureKind.TIMEOUT, error
    assert error.message == "attempt deadline reached"
