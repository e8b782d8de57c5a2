"""The watchdog's deadline holds for a wait that never suspends (a fast upstream's buffered bytes)."""

from __future__ import annotations

import asyncio

import pytest

from gateway_service.providers.watchdog import Expired, Watchdog


async def ready() -> int:
    return 1  # returns without suspending, as a read of bytes already buffered does


async def test_a_wait_past_its_deadline_expires_even_if_it_would_not_suspend() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop)
    assert await watchdog.wait(ready(), loop.time() + 60) == 1
    with pytest.raises(Expired):
        await watchdog.wait(ready(), loop.time() - 0.001)
    watchdog.close()


async def test_a_wait_that_suspends_past_its_deadline_expires() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop)
    with pytest.raises(Expired):
        await watchdog.wait(loop.create_future(), loop.time() + 0.01)
    watchdog.close()
