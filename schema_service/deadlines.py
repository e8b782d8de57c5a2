"""A write within the caller's deadline: refused at once when too little is left, DeadlineExceeded when it runs out.

Shared by the metrics writer and the usage ledger. A write cut by the deadline may or may not have committed;
both writers are idempotent, so the caller's retry with the same ids stores it or finds it stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from schema_service.errors import DeadlineExceeded

T = TypeVar("T")

# Less time than this left before the caller's deadline: refuse at once rather than start a write that cannot finish.
MIN_WRITE_TIME_S = 0.01


async def within_deadline(write: Awaitable[T], timeout_s: float | None) -> T:
    """`write`, awaited within `timeout_s` seconds (None: no deadline)."""
    if timeout_s is not None and timeout_s < MIN_WRITE_TIME_S:
        if asyncio.iscoroutine(write):
            write.close()  # never started: no "coroutine was never awaited" warning
        raise DeadlineExceeded(f"{timeout_s * 1000:.0f} ms left before the deadline: too little to start a write")
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await write
    except TimeoutError:
        if not scope.expired():
            raise
        raise DeadlineExceeded(f"the write did not finish within the call's deadline ({timeout_s:.3f} s)") from None
