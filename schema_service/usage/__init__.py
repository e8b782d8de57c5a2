"""The usage ledger: one row per LLM attempt with its tokens and cost, written once, summed on demand.

records.py   validation of a RecordUsage batch into ledger rows (fields named on refusal)
ledger.py    the write path: monthly partitions, binary COPY, exactly once per record
queries.py   spend and tokens grouped by caller, user, provider, model and day, in pages
"""
