"""Each caller's share of a provider's connections, so that no caller can take all of them.

A provider's HTTP pool holds `max_connections`; an attempt holds one of them from its request until
its stream ends. Left alone, one caller's long streams can hold every one and everyone else's chats
wait for a connection until their first-token timeout. So an attempt also takes one of its caller's
share, `max_connections_per_caller` (default: half of `max_connections`, at least 1): a caller using
its whole share has that provider skipped (BUDGET_EXHAUSTED, "share of connections in use") and its
call fails over to the next candidate, or ends RESOURCE_EXHAUSTED with RetryInfo when none is left.
Calls without a caller (a server without a callers file) are not counted: there is nobody to share with.
"""

from __future__ import annotations

from collections.abc import Callable

Release = Callable[[], None]
RETRY_AFTER_S = 1.0


def share_of(max_connections: int, per_caller: int | None) -> int:
    """The connections one caller may hold: its configured share, else half the pool, at least one."""
    if per_caller is not None:
        return min(per_caller, max_connections)
    return max(1, max_connections // 2)


class ConnectionShares:
    """Attempts in flight per (provider, caller); in memory, per gateway process (pools are per process)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], int] = {}  # no zero entries, so ended callers leave nothing behind

    def held(self, provider: str, caller: str) -> int:
        return self._held.get((provider, caller), 0)

    def take(self, provider: str, caller: str, share: int) -> Release | None:
        """One connection of `caller`'s share of `provider` (call the result to give it back), or None when
        the share is all in use."""
        if not caller:
            return _nothing
        key = (provider, caller)
        if self._held.get(key, 0) >= share:
            return None
        self._held[key] = self._held.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]

        return release


def _nothing() -> None:
    return None
