"""`python -m llm_simulator`: the local fault-injecting upstream (`make run`, tests and benchmarks use it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from llm_simulator import main


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop like `gateway-service serve`: the benchmark's upstream should not be the slowest process in it."""
    try:
        import uvloop
    except ImportError:  # not built for this platform: the standard loop serves the same way
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


if __name__ == "__main__":
    sys.exit(main(loop_factory=_loop_factory()))
