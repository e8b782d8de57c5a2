"""A deadline for a stream's successive awaits, cheaper per chunk than `asyncio.timeout()`.

`asyncio.timeout()` costs a Timeout object, a timer handle pushed on the loop's heap and its
cancellation for every await; a stream waits once per chunk, and the pipeline and the adapter
each bound that wait. Here one timer serves every wait: moving the deadline later (the idle
timeout after each chunk) only stores a float, and the timer, when it fires before the current
deadline, re-arms itself for it. The cancellation protocol is `asyncio.timeout()`'s: the task is
cancelled, and the cancellation becomes Expired (a TimeoutError) unless someone else cancelled it too.

The timer alone cannot bound a fast stream: when the upstream sends faster than the gateway reads, every
read finds its bytes already buffered and returns without suspending, so the task only ever waits
elsewhere (writing to the caller), the timer always fires between two reads, and there is nothing to
cancel. So each wait first compares the clock with its deadline, and one already past raises at once:
a stream is cut at its deadline however fast it is (tests/hostile/test_upstream_timeouts.py).

Kept because it wins, measured by bench/watchdog.py (2026-12-01, the 2-core machine under load, best of
25 rounds of 30,000 chunks; per chunk, a future a loop callback resolves):

                      uvloop            asyncio loop
    bare await        1607 ns           4670 ns
    Watchdog.wait     2506 ns (x1.56)   5337 ns (x1.14)
    timeout_at each   4813 ns (x3.00)   10368 ns (x2.22)
    one Timeout,      3035 ns (x1.89)   5824 ns (x1.25)
    rescheduled

Against `asyncio.timeout_at()` per await, the drop-in alternative, it halves the cost of the deadline
(x0.52 on uvloop); against one `asyncio.Timeout` moved with `reschedule()` it costs x0.83, and that one
could not serve here anyway: a Timeout belongs to the task that entered it, and a stream's reads move
between tasks (the first read runs in a task of its own so the request leaves at once).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Expired(TimeoutError):
    """The watchdog's deadline passed (told apart from a TimeoutError the awaited code raised itself)."""


class Watchdog:
    """Bounds one await at a time (in whichever task runs it) by an absolute loop time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = math.inf  # when the timer fires
        self._when = math.inf  # deadline of the await in progress; inf when none is
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    async def wait(self, awaitable: Awaitable[T], when: float) -> T:
        """`await awaitable`, raising Expired if loop time `when` passes first."""
        task = asyncio.current_task()
        assert task is not None, "Watchdog.wait runs inside a task"
        if self._loop.time() >= when:
            _discard(awaitable)
            raise Expired
        if when < self._armed_for:
            self._arm(when)
        self._when, self._task, cancelling = when, task, task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            fired, self._fired = self._fired, False
            if fired and task.uncancel() <= cancelling:
                raise Expired from None
            raise
        finally:
            if self._fired:  # fired, but the await ended another way: withdraw the cancel, as asyncio.timeout does
                task.uncancel()
            self._when, self._task, self._fired = math.inf, None, False

    def close(self) -> None:
        """Drop the timer (the stream is over)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle, self._armed_for = None, math.inf

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._armed_for = self._loop.call_at(when, self._fire), when

    def _fire(self) -> None:
        self._handle, armed_for, self._armed_for = None, self._armed_for, math.inf
        if self._task is None or self._when == math.inf:
            return  # no await in progress: the next one arms the timer again
        if self._when > armed_for:
            self._arm(self._when)  # the deadline moved later since the timer was set
            return
        self._fired = True
        self._task.cancel()


def _discard(awaitable: Awaitable[object]) -> None:
    """Close an awaitable that will never be awaited (a coroutine would warn it never was)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
