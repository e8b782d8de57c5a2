"""The loop every adapter runs: open the upstream stream, pace it, translate it, close it.

Stream timeouts are enforced here, and only here (the Pacer), rather than in the SDKs because the SDKs
only know a per-read timeout: the gateway needs "first token within X" (measured from the start of the
attempt, across connect, headers and any keep-alive chunks), "no gap longer than Y between outputs" and
"the attempt ends by its deadline". The pipeline sets those limits (domain/deadlines.py); an adapter
called on its own gets its provider's (`provider_deadlines`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gateway_service.domain.deadlines import StreamDeadlines
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, Finished, ProviderEvent, ToolCallDelta, carries_output
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.http_spans import end_unanswered
from gateway_service.providers.scrub import scrub, scrub_id
from gateway_service.providers.watchdog import Expired, Watchdog

T = TypeVar("T")
C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


class Pacer:
    """Enforces one attempt's StreamDeadlines around each await on the upstream, in whichever task awaits.

    The idle timer runs from the first wait after an output (`output`) until the next output: time spent
    handing the output to the caller is not the upstream's, and the waits for chunks that carry no output
    (`carries_output`) all count against the same gap.
    """

    def __init__(self, deadlines: StreamDeadlines) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadlines = deadlines
        self._output_started = False
        self._idle_from: float | None = None  # when the current gap between outputs began
        self._watchdog = Watchdog(self._loop)

    def output(self) -> None:
        """An output went to the caller: the next wait starts a new gap."""
        self._output_started, self._idle_from = True, None

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` within the current limit, raising ProviderError(TIMEOUT) past it."""
        if self._output_started and self._idle_from is None:
            self._idle_from = self._loop.time()
        limit = self._deadlines.limit(self._idle_from)
        try:
            return await self._watchdog.wait(awaitable, limit)
        except Expired as exc:
            raise ProviderError(FailureKind.TIMEOUT, self._deadlines.expired(limit, self._output_started)) from exc

    def close(self) -> None:
        self._watchdog.close()


def provider_deadlines(config: ProviderConfig, deadline_s: float) -> StreamDeadlines:
    """The limits of an attempt bounded only by its provider's timeouts and `deadline_s` from now."""
    return StreamDeadlines.starting(
        asyncio.get_running_loop().time(),
        first_token_s=config.first_token_timeout_s,
        idle_s=config.idle_timeout_s,
        total_s=min(deadline_s, config.timeout_s),
    )


def convert(build: Callable[[], T]) -> T:
    """Run a request conversion: what the provider's format cannot express is the caller's error.

    Called from the opener, so the failure surfaces while iterating, like every other one.
    """
    try:
        return build()
    except ValueError as exc:  # bad tool-call arguments JSON, bad reasoning signature, Unsupported...
        message = f"request cannot be sent to this provider: {exc}"
        raise ProviderError(FailureKind.INVALID_REQUEST, message, field=getattr(exc, "field", "")) from exc


class Translator(Protocol[C_contra]):
    """Turns one provider's chunks into events; `finish` raises TRUNCATED without a finish reason."""

    @property
    def complete(self) -> bool:
        """True once the finish reason arrived: the answer is whole."""
        ...

    def feed(self, chunk: C_contra) -> list[ProviderEvent]: ...

    def finish(self) -> list[ProviderEvent]: ...


@dataclass
class Upstream(Generic[C]):
    """An open upstream stream: its chunks, how to close it, and its request id."""

    chunks: AsyncIterator[C]
    close: Callable[[], Awaitable[None]]
    request_id: str = ""


class SdkAdapter(Generic[C]):
    """`stream()` as every SDK adapter has it: `_open` sends the request and returns the SDK's stream,
    `translator` (made from the upstream's request id) turns its chunks into events, `_map_error` maps what
    the SDK raised; `drive` runs the attempt under the deadlines' Pacer."""

    config: ProviderConfig
    translator: Callable[[str], Translator[C]]

    def stream(
        self, request: ChatRequest, model: str, *, deadlines: StreamDeadlines
    ) -> AsyncGenerator[ProviderEvent, None]:
        return drive(
            lambda: self._open(request, model),
            self._translate,
            Pacer(deadlines),
            self._map_error,
            provider=self.config.name,
            model=model,
            secrets=(self.config.api_key,),
        )

    def _translate(self, upstream: Upstream[C]) -> Translator[C]:
        return self.translator(upstream.request_id)

    async def _open(self, request: ChatRequest, model: str) -> Upstream[C]:
        raise NotImplementedError

    def _map_error(self, exc: Exception) -> ProviderError:
        raise NotImplementedError


# The access log: one INFO line per upstream request, written once the attempt is over (off the way to the
# first token). It stands in for httpx2's own per-request line, which providers/http.py turns off.
access_log = logging.getLogger("gateway_service.upstream")


async def drive(
    opener: Callable[[], Awaitable[Upstream[C]]],
    translator: Callable[[Upstream[C]], Translator[C]],
    pacer: Pacer,
    map_error: Callable[[Exception], ProviderError],
    *,
    provider: str = "",
    model: str = "",
    secrets: tuple[str | None, ...] = (),
) -> AsyncGenerator[ProviderEvent, None]:
    """Run one attempt; every failure leaves as ProviderError and the HTTP response is always closed.

    Every id the upstream chose (its request id, from a header or a chunk, a tool call's id) leaves scrubbed
    of `secrets` and bounded (scrub.scrub_id), here, on its one way out to the caller, the logs and spans.
    """
    upstream: Upstream[C] | None = None
    started = asyncio.get_running_loop().time()
    outcome = "cancelled"
    try:
        upstream = await pacer.wait(opener())
        upstream.request_id = scrub_id(upstream.request_id, secrets)
        state = translator(upstream)
        while True:
            try:
                chunk = await pacer.wait(anext(upstream.chunks))
            except StopAsyncIteration:
                break
            except Exception:
                if not state.complete:
                    raise
                break  # the answer is whole; only trailing events (usage, [DONE], message_stop) were lost
            for event in state.feed(chunk):
                if carries_output(event):
                    pacer.output()
                yield _scrub_ids(event, secrets)
        finished = state.finish()
        outcome = "ok"  # whole, even if the caller stops reading after the last event
        for event in finished:
            yield _scrub_ids(event, secrets)
    except ProviderError as exc:
        outcome = exc.kind.value
        _tag(exc, upstream, secrets)
        raise
    except Exception as exc:
        error = _tag(map_error(exc), upstream, secrets)
        outcome = error.kind.value
        raise error from exc
    finally:
        # Runs on aclose() and cancellation too: the upstream sees the connection close at once.
        pacer.close()
        if upstream is not None:
            await asyncio.shield(upstream.close())
        else:  # the open failed here, in the task that sent the request: end its HTTP span if no response came
            end_unanswered(outcome)
        if access_log.isEnabledFor(logging.INFO):
            elapsed_ms = round((asyncio.get_running_loop().time() - started) * 1000, 1)
            access_log.info(
                "upstream request",
                extra={
                    "provider": provider,
                    "model": model,
                    "outcome": outcome,
                    "duration_ms": elapsed_ms,
                    "upstream_request_id": upstream.request_id if upstream is not None else "",
                },
            )


def _tag(error: ProviderError, upstream: Upstream[Any] | None, secrets: tuple[str | None, ...]) -> ProviderError:
    """Give a mid-stream failure the upstream's request id, which the SDK exception did not carry; scrub the
    one it did carry (from the response's headers)."""
    if upstream is not None and not error.upstream_request_id:
        error.upstream_request_id = upstream.request_id
    else:
        error.upstream_request_id = scrub_id(error.upstream_request_id, secrets)
    # A translator's message may quote the upstream (an unknown finish reason); the SDK's passed make_error.
    error.message = scrub(error.message, secrets)
    error.args = (error.message,)
    return error


def _scrub_ids(event: ProviderEvent, secrets: tuple[str | None, ...]) -> ProviderEvent:
    """`event` with the upstream's id in it scrubbed (the first delta of a tool call, the Finished event)."""
    if isinstance(event, ToolCallDelta) and event.id:
        clean = scrub_id(event.id, secrets)
        return event if clean == event.id else dataclasses.replace(event, id=clean)
    if isinstance(event, Finished) and event.upstream_request_id:
        clean = scrub_id(event.upstream_request_id, secrets)
        return event if clean == event.upstream_request_id else dataclasses.replace(event, upstream_request_id=clean)
    return event
