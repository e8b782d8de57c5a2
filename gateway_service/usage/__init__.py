"""The gateway's side of the usage ledger: one UsageRecord per attempt made, to UsageService/RecordUsage.

    feed.py     LedgerEntry -> UsageRecord, queued for the bounded batching sender (gateway_service/sender.py)
    metrics.py  the feed's Prometheus families (buffered, sent, dropped by reason, failed calls)

Nothing here runs on the request path but `UsageFeed.record`, which only queues.
"""

from __future__ import annotations

from gateway_service.usage.feed import UsageFeed, usage_record

__all__ = ["UsageFeed", "usage_record"]
