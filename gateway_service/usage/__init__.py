"""The gateway's side of the usage ledger: one UsageRecord per attempt made, to UsageService/RecordUsage.

    feed.py     LedgerEntry -> UsageRecord, queued for the bounded batching sender (gateway_service/sender.py)
    spool.py    `usage.spool_dir`: segment files of length-prefixed RecordUsageRequest frames, fsync per batch
    seed.py     memory-kept dollar budgets start from the ledger's spend of the month (QueryUsage)

Nothing here runs on the request path but `UsageFeed.record`, which only queues.
"""

from __future__ import annotations

from gateway_service.usage.feed import UsageFeed, usage_record

__all__ = ["UsageFeed", "usage_record"]
