"""What a finished attempt tells the rest of the gateway: health, the ledger, the log and telemetry.

Called on the request path, so nothing here blocks: health and the ledger are in-memory updates, and the
observer (telemetry and the usage ledger) only queues for its buffered senders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway_service.accounting import Ledger
from gateway_service.chat.records import LedgerEntry
from gateway_service.chat.router import Candidate
from gateway_service.domain.events import AttemptRecord, FailedOver
from gateway_service.domain.failures import ProviderError
from gateway_service.domain.request import ChatRequest
from gateway_service.health import BreakerState, Health, Ticket

log = logging.getLogger(__name__)

AttemptObserver = Callable[[ChatRequest, AttemptRecord, "float | None"], None]
FailoverObserver = Callable[[FailedOver], None]
UsageObserver = Callable[[LedgerEntry], None]  # the usage feed: queues, never blocks


class Reporter:
    def __init__(
        self,
        health: Health,
        ledger: Ledger,
        observer: AttemptObserver | None = None,
        on_failover: FailoverObserver | None = None,
        on_usage: UsageObserver | None = None,
    ) -> None:
        self.health = health
        self.ledger = ledger
        self.observer = observer
        self.on_failover = on_failover  # metrics: one more failover
        self.on_usage = on_usage  # the usage ledger: one entry per attempt made, whatever its end

    def attempt_ended(
        self,
        request: ChatRequest,
        candidate: Candidate,
        record: AttemptRecord,
        error: ProviderError | None,
        first_token_s: float | None,
        ticket: Ticket,
        cancelled: bool,
    ) -> BreakerState | None:
        """Health, ledger, log and telemetry for a finished attempt; after a failure, the breaker's state."""
        name, model = candidate.provider.name, candidate.model.name
        breaker = None
        if error is not None:
            breaker = self.health.record_failure(ticket, error, record.duration_s)
        elif cancelled:
            self.health.record_cancelled(ticket)
        else:
            output = record.usage.output_tokens if record.usage is not None else 0
            self.health.record_success(ticket, first_token_s, record.duration_s, output)
        if record.usage is not None:
            self.ledger.add(name, record.usage.input_tokens, record.usage.output_tokens, record.usage.cost_usd)
        if cancelled:
            usage = record.usage
            log.info(
                "attempt cancelled; upstream closed",
                extra={
                    "provider": name,
                    "model": model,
                    "attempt": record.attempt,
                    "output_tokens_so_far": usage.output_tokens if usage else 0,
                    "usage_estimated": usage.estimated if usage else False,
                },
            )
        if self.observer is not None:
            self.observer(request, record, first_token_s)
        if self.on_usage is not None:
            started_ns = time.time_ns() - int(record.duration_s * 1e9)
            self.on_usage(LedgerEntry(request, record, candidate.key_id, started_ns, first_token_s, cancelled))
        return breaker

    def failed_over(self, event: FailedOver) -> None:
        log.warning(
            "attempt failed, failing over",
            extra={
                "from": f"{event.from_provider}/{event.from_model}",
                "to": f"{event.to_provider}/{event.to_model}",
                "reason": event.reason.value,
                "error": event.message,
                "attempt": event.attempt,
            },
        )
        if self.on_failover is not None:
            self.on_failover(event)
