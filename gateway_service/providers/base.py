"""The adapter interface every provider implements (its failure taxonomy lives in domain/failures.py).

An adapter turns a ChatRequest into its SDK's call and the SDK's stream into
ProviderEvents. Every exception its SDK (or the transport below it) can raise is
translated in one place in the adapter into ProviderError; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from gateway_service.config.providers import DEFAULT_TIMEOUTS
from gateway_service.domain.deadlines import StreamDeadlines
from gateway_service.domain.request import ChatRequest, ProviderEvent
from gateway_service.providers.http import TransportSettings


@dataclass(frozen=True)
class ProviderConfig:
    """What an adapter needs to reach one upstream."""

    name: str
    type: str  # openai | gemini | anthropic | openai_compatible | cohere
    base_url: str | None
    api_key: str | None
    api_version: str | None = None
    # The defaults are the config's, written once (config/providers.py ProviderTimeouts).
    connect_timeout_s: float = DEFAULT_TIMEOUTS.connect_timeout_s
    first_token_timeout_s: float = DEFAULT_TIMEOUTS.first_token_timeout_s
    idle_timeout_s: float = DEFAULT_TIMEOUTS.idle_timeout_s
    timeout_s: float = DEFAULT_TIMEOUTS.timeout_s
    transport: TransportSettings = TransportSettings()  # the HTTP stack under the SDK (providers/http.py)
    # Models configured `reasoning: effort`: asked for a thinking level instead of a token budget.
    effort_models: frozenset[str] = frozenset()
    # openai_compatible: ask for usage with `stream_options` (false: leave the field out; config/providers.py).
    stream_options: bool = True


class ProviderAdapter(Protocol):
    """One wire format. `stream` yields events and raises only ProviderError."""

    config: ProviderConfig

    def stream(
        self, request: ChatRequest, model: str, *, deadlines: StreamDeadlines
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Open the upstream stream for `model`; closing the iterator closes the HTTP request.

        `deadlines` bound the first output, the gaps between outputs and the whole attempt (set by the
        pipeline from the provider's timeouts and the caller's deadline; `streaming.provider_deadlines`
        gives an adapter called on its own its provider's); past one, `stream` raises ProviderError
        TIMEOUT. `aclose()` on the returned generator, or cancelling the task iterating it, closes the
        HTTP response at once.
        """
        ...

    async def aclose(self) -> None:
        """Release the SDK client and its connections."""
        ...
