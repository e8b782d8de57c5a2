"""Thin gRPC servicers: proto in, domain call, proto out, domain errors to status.

RPCs not built yet answer UNIMPLEMENTED (the generated base class does that).
"""

from __future__ import annotations

import grpc
from schemaservice.v1 import metrics_service_pb2_grpc, migration_service_pb2_grpc

from schema_service.app import App
from servicekit.server import Lifecycle


class MigrationServicer(migration_service_pb2_grpc.MigrationServiceServicer):
    """schemaservice.v1.MigrationService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle


class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    """schemaservice.v1.MetricsService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle


def add_to_server(server: grpc.aio.Server, app: App, lifecycle: Lifecycle) -> None:
    migration_service_pb2_grpc.add_MigrationServiceServicer_to_server(MigrationServicer(app, lifecycle), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsServicer(app, lifecycle), server)
