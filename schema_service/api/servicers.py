"""Every servicer of the schema service, registered on a server: where the gateway registers its own
(gateway_service/api/servicers.py), and called the same way by server.prepare."""

from __future__ import annotations

import grpc

from schema_service.api.metrics import add_metrics_service
from schema_service.api.migrations import MigrationServicer
from schema_service.api.usage import UsageServicer
from schema_service.app import App
from schemaservice.v1 import migration_service_pb2_grpc, usage_service_pb2_grpc
from servicekit.server import Lifecycle


def add_to_server(server: grpc.aio.Server, app: App, lifecycle: Lifecycle) -> None:
    migration_service_pb2_grpc.add_MigrationServiceServicer_to_server(MigrationServicer(app, lifecycle), server)
    add_metrics_service(server, app, lifecycle)
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(app), server)
