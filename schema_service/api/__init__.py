"""The schema service's gRPC face: thin servicers (proto in, domain call, proto out) and proto <-> domain mapping.

    servicers.py    add_to_server: every servicer this service serves, registered on a server (as the gateway's)
    boundary.py     BOUNDARY, the one error boundary of every servicer method
    migrations.py   MigrationService
    metrics.py      MetricsService (write batches read by metrics/wire.py)
    usage.py        UsageService (the usage ledger)
    protomap.py     proto <-> domain

RPCs not built yet answer UNIMPLEMENTED (the generated base classes do that).
"""
