"""The chat pipeline: a request's candidates, the attempts across them, and what the caller gets back.

Nothing here imports grpc; the servicers (api/) drive it through app.Gateway.start_chat.

Rooms, in the order a request meets them:
    router.py      the candidates for a request, in order (route, policy, slow ramp, provider_order)
    candidate.py   a Candidate: one provider/model with its adapter and budget slots
    policies.py    the routing policies: priority, weighted, lowest_latency, lowest_cost, least_busy
    rules.py       the failover decision, its rules in order: read this first
    failover.py    applies the rules: runs attempts across the candidates (ChatRun)
    attempt.py     one attempt: its timing (AttemptTiming), the commit window, closing upstream
    budgeting.py   one run's rate-limit budgets: taken before an attempt, squared with usage after
    midstream.py   what the caller holds of the answer, and the mid-stream policy after a failure
    records.py     what an attempt is reported as: its record and its usage
    reporting.py   what a finished attempt tells health, the ledger, the log and telemetry
    spans.py       an OpenTelemetry span per attempt
    outcome.py     the error of a run that got no answer
    aggregate.py   a run's events folded into one answer (unary Chat)
"""
