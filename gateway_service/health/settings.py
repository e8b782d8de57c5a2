"""The breaker's and the stall watch's settings, read from the config's `failover:` section.

The config model owns every default (config/model.py FailoverSettings); breaker.py and stalls.py take
their values from here, so a default is written once.
"""

from __future__ import annotations

from gateway_service.config import FailoverSettings
from gateway_service.health.breaker import BreakerSettings
from gateway_service.health.stalls import StallSettings


def breaker_settings(failover: FailoverSettings) -> BreakerSettings:
    return BreakerSettings(
        consecutive=failover.breaker_failures,
        window_s=failover.breaker_window_s,
        min_requests=failover.breaker_min_requests,
        error_rate=failover.breaker_error_rate,
        first_open_s=failover.breaker_open_s,
        max_open_s=failover.breaker_max_open_s,
    )


def stall_settings(failover: FailoverSettings) -> StallSettings:
    return StallSettings(factor=failover.stall_factor, floor_s=failover.stall_floor_s)
