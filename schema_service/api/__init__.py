"""The schema service's gRPC face: thin servicers (proto in, domain call, proto out) and proto <-> domain mapping.

    servicers.py    add_to_server: every servicer this service serves, registered on a server (as the gateway's)
    boundary.py     BOUNDARY, the one error boundary of every servicer method
    migrations.py   MigrationService
    metrics.py      MetricsService (write batches read by metrics/wire.py)
    usage.py        UsageService (the usage ledger)
    from_proto.py   requests -> domain queries (as the gateway's api/from_proto.py)
    to_proto.py     domain results -> messages (as the gateway's api/to_proto.py)

RPCs not built yet answer UNIMPLEMENTED (the generated base classes do that).
"""
