"""Where the response headers of an attempt's upstream requests go: a context variable, set by the pipeline.

The pipeline (chat/failover.py, through health's Headroom.listen) sets it while the task that sends an
attempt's request is created, so that task, and only it, carries the sink; the response hook every
provider's HTTP client runs (providers/http.py) hands it each response's headers. So the adapters and the
SDKs need not know, and the headers are read through the clients' public event hooks, for every SDK alike.
This is how the HTTP CLIENT span finds its parent too (OpenTelemetry's context is a context variable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar

HeadersSink = Callable[[Mapping[str, str]], None]

response_headers: ContextVar[HeadersSink | None] = ContextVar("gateway_response_headers", default=None)
