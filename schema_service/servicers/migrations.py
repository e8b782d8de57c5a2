"""schemaservice.v1.MigrationService servicer."""

from __future__ import annotations

from schema_service.app import App
from schemaservice.v1 import migration_service_pb2_grpc
from servicekit.server import Lifecycle


class MigrationServicer(migration_service_pb2_grpc.MigrationServiceServicer):
    """schemaservice.v1.MigrationService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle
