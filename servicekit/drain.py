"""Graceful drain: count the calls in flight, and refuse new ones with UNAVAILABLE once stopping.

grpc.aio's own `server.stop(grace)` refuses calls that arrive during the grace with CANCELLED,
which clients do not retry. Refusing them here with UNAVAILABLE (plus RetryInfo) lets a client's
retry policy move them to another replica, while the calls already running finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from google.rpc import code_pb2

from servicekit.boundary import abort
from servicekit.errors import ServiceError
from servicekit.handlers import WrappingInterceptor


class ServerShuttingDown(ServiceError):
    """The replica is draining; the call can be retried elsewhere at once.

    The one status for shutdown: new calls refused here, and long-lived calls (streams, waiters) that a
    service ends itself once `Lifecycle.stopping` is set.
    """

    code = code_pb2.UNAVAILABLE
    reason = "SERVER_SHUTTING_DOWN"


class GraceOver(Exception):
    """The drain's grace ran out while the call was running (raised inside `Drain.cut_scope`)."""


class Drain:
    """Calls in flight, whether new ones are still accepted, and whether the grace for those running is over."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        # Set when the grace is over: calls still running end themselves with their own status (cut_scope).
        self.cut = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    @asynccontextmanager
    async def cut_scope(self) -> AsyncIterator[None]:
        """Run the body until it ends or the grace is over; then it is cancelled and GraceOver raised here.

        A streaming call wraps its work in this so that it can end with the same details as any other
        failure of its kind, instead of the bare CANCELLED/UNAVAILABLE "Cancelling all calls" that
        `server.stop()` would give it.
        """
        task = asyncio.current_task()
        assert task is not None
        cut = False

        def on_cut(_: object) -> None:
            nonlocal cut
            if not waiter.cancelled():
                cut = True
                task.cancel()

        waiter = asyncio.ensure_future(self.cut.wait())
        waiter.add_done_callback(on_cut)
        try:
            yield
        except asyncio.CancelledError:
            if cut and task.uncancel() == 0:
                raise GraceOver() from None
            raise
        finally:
            waiter.remove_done_callback(on_cut)
            waiter.cancel()


class DrainInterceptor(WrappingInterceptor):
    """Wraps every method handler so that the drain sees each call start and end."""

    def __init__(self, drain: Drain) -> None:
        super().__init__(self._counted)
        self.drain = drain

    @asynccontextmanager
    async def _counted(self, method: str, kind: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if self.drain.stopping.is_set():
            await abort(context, ServerShuttingDown("server is shutting down; retry the call", retry_after_s=0))
        self.drain.enter()
        try:
            yield
        finally:
            self.drain.leave()
