"""schemaservice.v1.MetricsService servicer."""

from __future__ import annotations

from schema_service.app import App
from schemaservice.v1 import metrics_service_pb2_grpc
from servicekit.server import Lifecycle


class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    """schemaservice.v1.MetricsService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle
