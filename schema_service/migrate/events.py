"""Progress events of a migration run, in domain terms (the servicer maps them to protos)."""

from __future__ import annotations

from dataclasses import dataclass

from schema_service.migrate.lock import LockHolder


@dataclass(frozen=True)
class PlannedItem:
    version: int
    name: str
    checksum: str
    transactional: bool
    statement_count: int


@dataclass(frozen=True)
class PlanReady:
    current_version: int
    items: list[PlannedItem]


@dataclass(frozen=True)
class LockWaiting:
    holder: LockHolder | None


@dataclass(frozen=True)
class MigrationStarted:
    version: int
    name: str
    statement_count: int
    filename: str = ""
    transactional: bool = True


@dataclass(frozen=True)
class StatementFinished:
    version: int
    index: int
    count: int
    duration_s: float
    resumed: bool


@dataclass(frozen=True)
class MigrationFinished:
    version: int
    name: str
    duration_s: float
    checksum: str
    filename: str = ""


@dataclass(frozen=True)
class RunDone:
    current_version: int
    applied_count: int


Event = PlanReady | LockWaiting | MigrationStarted | StatementFinished | MigrationFinished | RunDone
