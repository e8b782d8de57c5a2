"""One attempt against one candidate: its timing (stream deadlines, commit window), usage, closing upstream.

The timing is set here, where the caller's deadline split across candidates is known, and enforced
by the adapter's Pacer (providers/streaming.py), the one owner of stream timeouts. What this module
times itself is the commit window: when held output is released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from gateway_service.chat.router import Candidate
from gateway_service.config import FailoverSettings
from gateway_service.domain.deadlines import StreamDeadlines
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    ProviderEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from gateway_service.providers.reasoning import shown

Piece = TextDelta | ReasoningDelta | ToolCallDelta


@dataclass(frozen=True)
class AttemptTiming:
    """One attempt's stream deadlines (loop time) and its commit window: when output must come, and when
    held output is released."""

    stream: StreamDeadlines
    window_ms: int = 0
    window_pieces: int = 0

    @property
    def first_token_by(self) -> float:
        return self.stream.first_token_by

    @classmethod
    def share(
        cls,
        candidate: Candidate,
        request: ChatRequest,
        settings: FailoverSettings,
        deadline: float,
        candidates_left: int,
    ) -> AttemptTiming:
        """The first token within this attempt's share of what is left of `deadline` (loop time)."""
        now = asyncio.get_running_loop().time()
        remaining = max(0.0, deadline - now)
        share = max(settings.min_attempt_budget_s, remaining / max(1, candidates_left))
        provider = candidate.provider
        stream = StreamDeadlines.starting(
            now,
            first_token_s=min(provider.first_token_timeout_s, share),
            idle_s=provider.idle_timeout_s,
            total_s=min(remaining, provider.timeout_s),
            first_token_limit="this attempt's share of the deadline" if share < provider.first_token_timeout_s else "",
        )
        return cls(
            stream,
            window_ms=request.commit_window_ms or settings.commit_window_ms,
            window_pieces=request.commit_window_tokens or settings.commit_window_tokens,
        )


@dataclass
class AttemptState:
    """What one attempt produced so far; read by failover after the attempt ends or fails."""

    started: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None
    pieces_received: int = 0
    chars_received: int = 0
    released: list[Piece] = field(default_factory=list)  # output handed to the caller
    usage: UsageReport | None = None
    finished: Finished | None = None

    @property
    def committed(self) -> bool:
        return bool(self.released)


class Attempt:
    """Runs `candidate` for `request`, yielding the output pieces the caller may see."""

    def __init__(
        self,
        candidate: Candidate,
        request: ChatRequest,
        timing: AttemptTiming,
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        self.candidate = candidate
        self.request = request
        self.timing = timing
        self._on_first_token = on_first_token  # health's stall watch
        self.state = AttemptState()
        self._held: list[Piece] = []
        self._window_end: float | None = None
        self._stream: AsyncIterator[ProviderEvent] | None = None
        # A read running as a task: the first one (so the upstream request is on its way while the caller
        # is told the attempt started), or one still in flight when the commit window closed (cancelling
        # it would end the upstream stream). `_next` awaits it before reading on.
        self._read: asyncio.Future[ProviderEvent] | None = None

    def open(self) -> None:
        """Send the upstream request now, in the background; `pieces()` picks up its first event."""
        adapter = self.candidate.adapter
        assert adapter is not None  # failover skips unconfigured candidates
        # Reasoning text the caller asked not to see is dropped here, for every adapter alike.
        events = adapter.stream(self.request, self.candidate.model.name, deadlines=self.timing.stream)
        self._stream = shown(self.request, events)
        self._read = asyncio.ensure_future(anext(self._stream))

    async def sent(self) -> None:
        """Returns once the request open() started is on the wire: two loop turns. The read task builds and
        sends it in the first, except that aiohttp (the default stack) writes the request from a task of its
        own, which before Python 3.12 first runs in the turn after (3.12 starts it eagerly). Measured through
        a served gateway: after one turn every request still left after the AttemptStarted write, ~0.1 ms
        later; after two, every one before it."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Close the upstream HTTP request at once (failure, cancellation, the caller going away, or done)."""
        read, self._read = self._read, None
        if read is not None:
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()

    def pieces(self) -> AsyncGenerator[Piece, None]:
        """Output pieces; returns after the finish event (in `state.finished`), raises ProviderError."""
        assert self._stream is not None, "open() first"
        return self._run(self._stream, asyncio.get_running_loop())

    async def _run(
        self, stream: AsyncIterator[ProviderEvent], loop: asyncio.AbstractEventLoop
    ) -> AsyncGenerator[Piece, None]:
        while self.state.finished is None:
            event = await self._next(stream, loop.time())
            if event is None:  # the commit window closed while waiting: release what is held
                for piece in self._release():
                    yield piece
                continue
            if isinstance(event, UsageReport):
                self.state.usage = event
            elif isinstance(event, Finished):
                self.state.finished = event
                for piece in self._release():
                    yield piece
            else:
                for piece in self._take(event, loop.time()):
                    yield piece

    async def _next(self, stream: AsyncIterator[ProviderEvent], now: float) -> ProviderEvent | None:
        """The next event (the adapter raises TIMEOUT past a limit), or None when the commit window closes first."""
        try:
            if self._window_end is not None:
                return await self._read_until(stream, self._window_end - now)
            return await (self._take_read() or anext(stream))
        except StopAsyncIteration:
            raise ProviderError(FailureKind.TRUNCATED, "stream ended without a finish reason") from None

    async def _read_until(self, stream: AsyncIterator[ProviderEvent], wait_s: float) -> ProviderEvent | None:
        """The next event, or None when `wait_s` passes first (the read goes on in the background)."""
        if self._read is None:
            self._read = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait({self._read}, timeout=max(0.0, wait_s))
        return self._take_read().result() if done else None  # type: ignore[union-attr]

    def _take_read(self) -> asyncio.Future[ProviderEvent] | None:
        read, self._read = self._read, None
        return read

    def _take(self, piece: Piece, now: float) -> list[Piece]:
        state = self.state
        if state.first_token_s is None:
            state.first_token_s = time.monotonic() - state.started
            if self._on_first_token is not None:
                self._on_first_token()
        state.pieces_received += 1
        state.chars_received += len(piece_text(piece))
        if state.committed or not (self.timing.window_ms or self.timing.window_pieces):
            state.released.append(piece)
            return [piece]
        self._held.append(piece)
        if self._window_end is None and self.timing.window_ms:
            self._window_end = now + self.timing.window_ms / 1000
        window_over = self._window_end is not None and now >= self._window_end
        if window_over or (self.timing.window_pieces and len(self._held) >= self.timing.window_pieces):
            return self._release()
        return []

    def received_text(self) -> str:
        """Every piece's text received so far, released or held (what a cut attempt's output is counted from)."""
        return "".join(piece_text(p) for p in (*self.state.released, *self._held))

    def _release(self) -> list[Piece]:
        held, self._held = self._held, []
        self._window_end = None
        self.state.released.extend(held)
        return held


def piece_text(piece: Piece) -> str:
    """The text a piece carries: output or reasoning text, or a tool call's arguments."""
    return str(getattr(piece, "text", "")) + str(getattr(piece, "arguments_json", ""))
