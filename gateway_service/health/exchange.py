"""Health's Redis: what one replica tells the others, what it hears from them, and whether Redis is there.

Every change is one MULTI of key writes (a state key with a TTL, so a replica that starts later reads it)
and a PUBLISH on one channel, sent from a task of its own: the request path never waits on Redis. A
listener task holds the subscription; when it (re)connects it reads every state key once, then applies
each message as it comes. The half-open probe is claimed with SET NX PX, so of two replicas racing for
it exactly one wins (`claim`).

When Redis cannot be reached (the subscription drops, a write or a claim fails or times out) the
replica says so once (a WARNING line, `on_shared(False)`), keeps its health in its own memory, and tries
again every `retry_s`; when it is back it says so once too and reads the state keys again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Message = dict[str, Any]
_UNREACHABLE = (RedisError, OSError, TimeoutError)

# KEYS: the probe key. ARGV: this replica, milliseconds. -1 when this replica has it now, else the holder's ms left.
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""

# KEYS: the probe key, the channel. ARGV: this replica, the message. Frees the probe only if this replica holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
end
return 0
"""


class Exchange:
    """The Redis side of shared health; `apply` gets every message of another replica (and each state key)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout_s: float,
        retry_s: float,
        apply: Callable[[Message], None],
        on_shared: Callable[[bool], None] = lambda up: None,
        where: str = "redis",
    ) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.me = uuid.uuid4().hex[:12]
        self.prefix = f"{prefix}:health"
        self.channel = f"{self.prefix}:changes"
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.apply = apply
        self.on_shared = on_shared
        self.where = where
        self._known: bool | None = None  # None until the first connect (or failure) says which
        self._claim = self.client.register_script(CLAIM)
        self._release = self.client.register_script(RELEASE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Subscribed and writing: health is shared; else it is this replica's own."""
        return self._known is True

    def state_key(self, name: str) -> str:
        return f"{self.prefix}:state:{name}"

    def probe_key(self, name: str) -> str:
        return f"{self.prefix}:probe:{name}"

    def start(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    def send(self, message: Message, key: str | None, ttl_s: float | None, drop: tuple[str, ...] = ()) -> None:
        """Publish `message`; with `ttl_s` also keep it under `key` that long, else delete `key` (and `drop`).

        With no `key` it is only published (a change that only adds to a state others keep)."""
        if not self.up:
            return  # Redis is away: this replica keeps its own; the others read the keys when it is back

        async def write() -> None:
            body = json.dumps({**message, "from": self.me})
            async with self.client.pipeline(transaction=True) as pipe:
                if key is not None and ttl_s is not None:
                    pipe.set(key, body, px=max(1, int(ttl_s * 1000)))  # who wrote it too: not reapplied there
                elif key is not None:
                    pipe.delete(key)
                if drop:
                    pipe.delete(*drop)
                pipe.publish(self.channel, body)
                await pipe.execute()

        self._guarded(write)

    def release(self, key: str, message: Message) -> None:
        """Free the probe this replica holds, and tell the others they may claim it."""
        if self.up:
            body = json.dumps({**message, "from": self.me})
            self._guarded(lambda: self._release(keys=[key, self.channel], args=[self.me, body]))

    async def claim(self, key: str, ttl_s: float) -> float | None:
        """Take the probe for `ttl_s`: None when this replica has it, else the seconds the holder keeps it."""
        try:
            async with asyncio.timeout(self.timeout_s):
                left_ms = await self._claim(keys=[key], args=[self.me, max(1, int(ttl_s * 1000))])
        except _UNREACHABLE as exc:
            self._down(exc)
            return None  # no one to share with: the probe is this replica's own, as in memory
        return None if int(left_ms) < 0 else int(left_ms) / 1000

    def spawn(self, call: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `call` on a task of its own, kept until it ends (closing waits for it)."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(call())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _guarded(self, call: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await call()
            except _UNREACHABLE as exc:
                self._down(exc)

        self.spawn(run)

    async def _listen(self, wait_s: float = 0.0) -> None:
        await asyncio.sleep(wait_s)  # after a failed write: Redis is left alone for retry_s, as after a drop
        while True:
            try:
                await self._subscribed()
            except _UNREACHABLE as exc:
                self._down(exc)
            await asyncio.sleep(self.retry_s)  # the retry interval while Redis is away

    async def _subscribed(self) -> None:
        async with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
            async with asyncio.timeout(self.timeout_s):
                await pubsub.subscribe(self.channel)
            await self._read_state()
            self._set_up(True, None)
            while True:
                message = await pubsub.get_message(timeout=self.retry_s)
                if message is None:
                    async with asyncio.timeout(self.timeout_s):
                        await pubsub.ping()  # an idle subscription: is Redis still there?
                    continue
                self._heard(message.get("data"))

    async def _read_state(self) -> None:
        """Every state key once: what the others started before this replica listened."""
        async for key in self.client.scan_iter(match=self.state_key("*"), count=500):
            async with asyncio.timeout(self.timeout_s):
                value = await self.client.get(key)
            if value is not None:
                self._heard(value)

    def _heard(self, data: Any) -> None:
        if not isinstance(data, bytes | str):
            return  # a pong
        try:
            message = json.loads(data)
        except ValueError:
            return  # not ours: the channel is named by the prefix, but anyone may publish on it
        if isinstance(message, dict) and message.get("from") != self.me:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.apply(message)

    def _down(self, exc: BaseException) -> None:
        self._set_up(False, exc)

    def _set_up(self, up: bool, exc: BaseException | None) -> None:
        if up == self._known:
            return
        again, self._known = self._known is False, up
        self.on_shared(up)
        if up:
            log.info(f"provider health: shared through Redis{' again' if again else ''}", extra={"redis": self.where})
            return
        error = f"{type(exc).__name__}: {exc}" if exc is not None and str(exc) else type(exc).__name__
        log.warning(
            "provider health: Redis unreachable; this replica keeps its own health in memory until it is back",
            extra={"redis": self.where, "error": error, "retry_s": self.retry_s},
        )
        if self._listener is not None and asyncio.current_task() is not self._listener:
            self._listener.cancel()  # a write saw it first: the listener's subscription is dead too
            self._listener = asyncio.get_running_loop().create_task(self._listen(self.retry_s))

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.timeout_s * 2)
        await self.client.aclose()
