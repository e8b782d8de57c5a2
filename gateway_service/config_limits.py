"""Rate-limit budgets in the gateway config: `limits:` of a provider or model, and the top-level `limits:` section.

A budget is a set of rates named `{requests|tokens}_per_{second|minute|hour|day}`, each a positive
integer. Parsing goes through config_schema.Reader, so every error names the file and key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway_service.config_schema import Reader, Secret

WINDOWS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
RATE_NAMES = tuple(f"{unit}_per_{window}" for unit in ("requests", "tokens") for window in WINDOWS)
BACKENDS = ("memory", "redis")


@dataclass(frozen=True)
class Rate:
    """One limit: at most `limit` requests (or tokens) per `window_s`, refilled continuously."""

    name: str
    limit: int
    window_s: float

    @property
    def counts_tokens(self) -> bool:
        return self.name.startswith("tokens_")


Budget = tuple[Rate, ...]


@dataclass(frozen=True)
class LimitSettings:
    """The top-level `limits:` section: where budgets are kept and what each caller (user_id) may use."""

    backend: str = "memory"
    redis_url: Secret | None = None  # may hold a password: never printed
    key_prefix: str = "llmgateway:limits"
    redis_timeout_ms: float = 50.0
    redis_retry_s: float = 1.0
    users: Budget = ()
    user_overrides: Mapping[str, Budget] = field(default_factory=dict)

    def user_budget(self, user_id: str) -> Budget:
        return self.user_overrides.get(user_id, self.users)


def budget(parent: Reader, key: str = "limits") -> Budget:
    """The rates under `parent.key` (empty when the key is absent)."""
    section = parent.mapping(key)
    section.only(*RATE_NAMES)
    rates = []
    for name in RATE_NAMES:
        value = section.data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise section.error(name, f"must be a positive integer (leave the key out for no limit), got {value!r}")
        rates.append(Rate(name, value, WINDOWS[name.rpartition("_per_")[2]]))
    return tuple(rates)


def limit_settings(root: Reader) -> LimitSettings:
    section = root.mapping("limits")
    section.only("backend", "redis_url", "key_prefix", "redis_timeout_ms", "redis_retry_s", "users", "user_overrides")
    backend = section.choice("backend", BACKENDS) if section.data.get("backend") is not None else "memory"
    redis_url = section.text("redis_url")
    if backend == "redis" and not redis_url:
        raise section.error("redis_url", "is required with backend: redis")
    if redis_url:
        _check_redis_url(section, redis_url)
    users = budget(section, "users")
    overrides = section.mapping("user_overrides")
    return LimitSettings(
        backend=backend,
        redis_url=Secret(redis_url) if redis_url else None,
        key_prefix=section.text("key_prefix") or LimitSettings.key_prefix,
        redis_timeout_ms=_positive(section, "redis_timeout_ms", LimitSettings.redis_timeout_ms),
        redis_retry_s=section.number("redis_retry_s", LimitSettings.redis_retry_s),
        users=users,
        user_overrides={user: _override(users, budget(overrides, user)) for user in overrides.keys()},
    )


def _check_redis_url(section: Reader, url: str) -> None:
    """What the Redis client would refuse at start-up anyway, as a config error naming the key."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise section.error("redis_url", "must start with redis://, rediss:// or unix://")
    try:
        port = urlsplit(url).port  # the Redis client reads the port the same way, and would fail later
    except ValueError as exc:  # the message names the bad part, never the password
        raise section.error("redis_url", f"not a valid Redis URL: {exc}") from None
    if port == 0:
        raise section.error("redis_url", "port 0 is not a Redis port")


def _override(default: Budget, override: Budget) -> Budget:
    """A user's override replaces the default rates it names and keeps the others."""
    named = {rate.name for rate in override}
    return tuple(r for r in default if r.name not in named) + override


def _positive(section: Reader, key: str, default: float) -> float:
    value = section.number(key, default)
    if value == 0:
        raise section.error(key, "must be greater than 0")
    return value
