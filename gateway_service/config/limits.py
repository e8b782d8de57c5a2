"""Budgets in the gateway config: `limits:` of a provider or model, and the top-level `limits:` section with its
dollar budgets (`limits.spend`).

A budget is written as a mapping of rates named `{requests|tokens}_per_{second|minute|hour|day}`,
each a positive integer (RateLimits), and held as a tuple of Rate: what the limiter counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError, core_schema

from gateway_service.config.base import Frozen, NonNegativeFloat, PositiveFloat, Text, invalid

WINDOWS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True)
class Rate:
    """One limit: at most `limit` requests (or tokens) per `window_s`, refilled continuously."""

    name: str
    limit: int
    window_s: float

    @property
    def counts_tokens(self) -> bool:
        return self.name.startswith("tokens_")


def _positive_rate(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PydanticCustomError(
            "config", "must be a positive integer (leave the key out for no limit), got {value}", {"value": repr(value)}
        )
    return value


# Checked before pydantic's int (which would take True or 2.0) so the message says what a rate may be.
PerWindow = Annotated[int | None, BeforeValidator(_positive_rate)]


class RateLimits(Frozen):
    """A budget as written: leave a rate out for no limit."""

    requests_per_second: PerWindow = None
    """At most this many requests per second."""
    requests_per_minute: PerWindow = None
    """At most this many requests per minute."""
    requests_per_hour: PerWindow = None
    """At most this many requests per hour."""
    requests_per_day: PerWindow = None
    """At most this many requests per day."""
    tokens_per_second: PerWindow = None
    """At most this many tokens (prompt estimate, then usage) per second."""
    tokens_per_minute: PerWindow = None
    """At most this many tokens (prompt estimate, then usage) per minute."""
    tokens_per_hour: PerWindow = None
    """At most this many tokens (prompt estimate, then usage) per hour."""
    tokens_per_day: PerWindow = None
    """At most this many tokens (prompt estimate, then usage) per day."""

    def rates(self) -> tuple[Rate, ...]:
        return tuple(
            Rate(name, limit, WINDOWS[name.rpartition("_per_")[2]]) for name, limit in self if limit is not None
        )


class _BudgetSchema:
    """A tuple of Rate given as such (from code), or validated from a RateLimits mapping (from a file)."""

    written_as = RateLimits  # what the loader names as the allowed keys, and the reference documents

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        as_written = core_schema.chain_schema(
            [handler.generate_schema(RateLimits), core_schema.no_info_plain_validator_function(RateLimits.rates)]
        )

        def choose(value: Any, validate: Callable[[Any], Any]) -> Any:
            if isinstance(value, tuple) and all(isinstance(rate, Rate) for rate in value):
                return value
            return validate(value)

        return core_schema.no_info_wrap_validator_function(choose, as_written)


Budget = Annotated[tuple[Rate, ...], _BudgetSchema]


# US dollars, exact: a YAML 50 or 0.5 is that decimal.
UsdAmount = Annotated[Decimal, Field(gt=0, le=10**9, decimal_places=6)]


class SpendLimits(Frozen):
    """A dollar budget as written: leave one out for no limit. Windows are UTC calendar days and months."""

    usd_per_day: UsdAmount | None = None
    """At most this many US dollars per UTC day (resets at 00:00 UTC)."""
    usd_per_month: UsdAmount | None = None
    """At most this many US dollars per UTC calendar month (resets on the 1st, 00:00 UTC)."""

    def merged(self, override: SpendLimits | None) -> SpendLimits:
        """An override replaces the amounts it names and keeps the others."""
        if override is None:
            return self
        return SpendLimits(
            usd_per_day=override.usd_per_day if override.usd_per_day is not None else self.usd_per_day,
            usd_per_month=override.usd_per_month if override.usd_per_month is not None else self.usd_per_month,
        )

    @property
    def any(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None


class SpendSettings(Frozen):
    """`limits.spend:` dollar budgets per caller and per user, kept where the rate budgets are (`limits.backend`).

    Before each attempt the gateway reserves its estimated cost (the prompt's estimated tokens at the input price
    plus max_output_tokens, or `default_output_tokens`, at the output price) and afterwards replaces it by the real
    cost; see docs/costs.md.
    """

    callers: SpendLimits = SpendLimits()
    """The budget of each caller (the authenticated caller of the chat)."""
    caller_overrides: Mapping[str, SpendLimits] = {}
    """Per caller name: replaces the amounts it names, keeps the others of `callers`."""
    users: SpendLimits = SpendLimits()
    """The budget of each user_id, within its caller (the same user_id of two callers is two users)."""
    user_overrides: Mapping[str, SpendLimits] = {}
    """Per user_id: replaces the amounts it names, keeps the others of `users`."""
    default_output_tokens: Annotated[int, Field(ge=1, le=10_000_000)] = 4096
    """Output tokens reserved for a request that sets no max_output_tokens."""
    on_backend_error: Literal["deny", "allow"] = "deny"
    """When Redis cannot be reached: deny (UNAVAILABLE, the default: a dollar budget holds or nothing runs) or allow
    (the call runs unbudgeted; logged and counted). Rate budgets always fail open."""

    @property
    def configured(self) -> bool:
        overrides = (*self.caller_overrides.values(), *self.user_overrides.values())
        return self.callers.any or self.users.any or any(o.any for o in overrides)

    def caller_limits(self, caller: str) -> SpendLimits:
        return self.callers.merged(self.caller_overrides.get(caller))

    def user_limits(self, user_id: str) -> SpendLimits:
        return self.users.merged(self.user_overrides.get(user_id))


class LimitSettings(Frozen):
    """The top-level `limits:` section: where budgets are kept and what each caller (user_id) may use."""

    backend: Literal["memory", "redis"] = "memory"
    """memory: per process | redis: shared by every replica."""
    redis_url: SecretStr | None = None
    """Required with backend redis (redis://, rediss://, unix://); printed as ********** (it may hold a password)."""
    key_prefix: Text = "llmgateway:limits"
    """Redis keys start with this (one prefix per gateway deployment)."""
    redis_timeout_ms: PositiveFloat = 50.0
    """Connect and command timeout; slower counts as unreachable."""
    redis_retry_s: NonNegativeFloat = 1.0
    """After a Redis failure, calls go ahead unbudgeted this long before Redis is tried again."""
    users: Budget = ()
    """The budget of each user_id (ChatRequest.user_id); same rate names as a provider's limits."""
    user_overrides: Mapping[str, Budget] = {}
    """Per user_id: replaces the rates it names, keeps the others of `users`. The key "" is calls without a user_id."""
    spend: SpendSettings = SpendSettings()
    """Dollar budgets per caller and per user (below)."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            _check_redis_url(url.get_secret_value())
        return url

    @model_validator(mode="after")
    def _redis_needs_its_url(self) -> LimitSettings:
        if self.backend == "redis" and self.redis_url is None:
            raise invalid("redis_url", "is required with backend: redis")
        return self

    def user_budget(self, user_id: str) -> tuple[Rate, ...]:
        """A user's override replaces the default rates it names and keeps the others."""
        override = self.user_overrides.get(user_id)
        if override is None:
            return self.users
        named = {rate.name for rate in override}
        return tuple(r for r in self.users if r.name not in named) + override


def _check_redis_url(url: str) -> None:
    """What the Redis client would refuse at start-up anyway, as a config error naming the key."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise PydanticCustomError("config", "must start with redis://, rediss:// or unix://")
    try:
        port = urlsplit(url).port  # the Redis client reads the port the same way, and would fail later
    except ValueError as exc:  # the message names the bad part, never the password
        raise PydanticCustomError("config", "not a valid Redis URL: {reason}", {"reason": str(exc)}) from None
    if port == 0:
        raise PydanticCustomError("config", "port 0 is not a Redis port")


def without_password(url: str) -> str:
    """host:port/db of a Redis URL, for logs: a password in it must never be printed."""
    parts = urlsplit(url)
    return f"{parts.hostname or parts.path}:{parts.port or ''}{parts.path if parts.hostname else ''}"
