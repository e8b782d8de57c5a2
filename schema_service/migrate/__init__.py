"""The migration engine: files, plan, lock, apply, history, journal (no gRPC in here)."""

from __future__ import annotations

from schema_service.migrate.runner import RunOptions, apply_migrations, migrate

__all__ = ["RunOptions", "apply_migrations", "migrate"]
