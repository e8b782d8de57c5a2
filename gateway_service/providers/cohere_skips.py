"""The stream events the `cohere` SDK skips: made failures of the attempt, and logged without their text.

The SDK's v2 stream parser (cohere/v2/raw_client.py) drops an event whose JSON does not fit its types and
goes on, logging through the root logger a warning that quotes the whole event (`sse: {_sse!r}`: model
output, or a prompt an upstream echoes); an event that is not JSON at all it logs, with its first 100
characters, through `cohere.core.pydantic_utilities`. A dropped content delta is an answer silently missing
a piece, and the quote puts upstream text in the gateway's log. No public option changes either.

So a filter on those two loggers rewrites any record made by the SDK's own code to a line without the
event, and counts it for the attempt reading the stream at the time: `watched` sets a context variable
around each step of the SDK's event iterator (one step runs in one task; a stream's steps may move between
tasks, the variable is set anew for each), and after a step that logged a skip the attempt fails
MALFORMED_RESPONSE, as an unreadable event does on the other providers. tests/gateway/test_cohere.py sends
such an event over real HTTP and checks both, so an SDK that changes how it skips fails there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import cohere

from gateway_service.domain.failures import FailureKind, ProviderError

SDK_DIR = os.path.dirname(os.path.abspath(cohere.__file__)) + os.sep
# Where the SDK logs a skipped event: the root logger (logging.warning / logging.error) and its SSE helper's.
SKIP_LOGGERS = ("", "cohere.core.pydantic_utilities")
UNQUOTED = "cohere SDK skipped a stream event it could not read (the event is not logged)"

_skips: ContextVar[list[str] | None] = ContextVar("cohere_skips", default=None)


class SkippedEvents(logging.Filter):
    """Rewrites the SDK's own records to UNQUOTED and counts them for the attempt reading the stream."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(SDK_DIR):
            return True
        skips = _skips.get()
        if skips is not None:
            skips.append(record.levelname)
        record.msg, record.args, record.exc_info, record.exc_text = UNQUOTED, (), None, None
        return True


def install() -> None:
    """Put the filter on the SDK's skip loggers, once per process."""
    for name in SKIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SkippedEvents) for f in logger.filters):
            logger.addFilter(SkippedEvents())


async def watched(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The SDK's events, failing MALFORMED_RESPONSE after any step in which it skipped one."""
    skips: list[str] = []
    while True:
        token = _skips.set(skips)
        try:
            event = await anext(events)
        except StopAsyncIteration:
            event = None
        finally:
            _skips.reset(token)
        if skips:
            raise ProviderError(FailureKind.MALFORMED_RESPONSE, f"{len(skips)} stream event(s) the SDK could not read")
        if event is None:
            return
        yield event
