import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DifferenceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIFFERENCE_KIND_UNSPECIFIED: _ClassVar[DifferenceKind]
    DIFFERENCE_KIND_MISSING: _ClassVar[DifferenceKind]
    DIFFERENCE_KIND_UNEXPECTED: _ClassVar[DifferenceKind]
    DIFFERENCE_KIND_CHANGED: _ClassVar[DifferenceKind]

class LintSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINT_SEVERITY_UNSPECIFIED: _ClassVar[LintSeverity]
    LINT_SEVERITY_WARNING: _ClassVar[LintSeverity]
    LINT_SEVERITY_ERROR: _ClassVar[LintSeverity]
DIFFERENCE_KIND_UNSPECIFIED: DifferenceKind
DIFFERENCE_KIND_MISSING: DifferenceKind
DIFFERENCE_KIND_UNEXPECTED: DifferenceKind
DIFFERENCE_KIND_CHANGED: DifferenceKind
LINT_SEVERITY_UNSPECIFIED: LintSeverity
LINT_SEVERITY_WARNING: LintSeverity
LINT_SEVERITY_ERROR: LintSeverity

class MigrateRequest(_message.Message):
    __slots__ = ("dry_run", "target_version", "allow_out_of_order")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OUT_OF_ORDER_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    target_version: int
    allow_out_of_order: bool
    def __init__(self, dry_run: _Optional[bool] = ..., target_version: _Optional[int] = ..., allow_out_of_order: _Optional[bool] = ...) -> None: ...

class MigrateResponse(_message.Message):
    __slots__ = ("plan", "lock_waiting", "migration_started", "statement_finished", "migration_finished", "done")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    LOCK_WAITING_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_STARTED_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FINISHED_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FINISHED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    lock_waiting: LockWaiting
    migration_started: MigrationStarted
    statement_finished: StatementFinished
    migration_finished: MigrationFinished
    done: MigrateDone
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., lock_waiting: _Optional[_Union[LockWaiting, _Mapping]] = ..., migration_started: _Optional[_Union[MigrationStarted, _Mapping]] = ..., statement_finished: _Optional[_Union[StatementFinished, _Mapping]] = ..., migration_finished: _Optional[_Union[MigrationFinished, _Mapping]] = ..., done: _Optional[_Union[MigrateDone, _Mapping]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("current_version", "migrations")
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    migrations: _containers.RepeatedCompositeFieldContainer[PlannedMigration]
    def __init__(self, current_version: _Optional[int] = ..., migrations: _Optional[_Iterable[_Union[PlannedMigration, _Mapping]]] = ...) -> None: ...

class PlannedMigration(_message.Message):
    __slots__ = ("version", "name", "checksum", "transactional", "statement_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONAL_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: int
    name: str
    checksum: str
    transactional: bool
    statement_count: int
    def __init__(self, version: _Optional[int] = ..., name: _Optional[str] = ..., checksum: _Optional[str] = ..., transactional: _Optional[bool] = ..., statement_count: _Optional[int] = ...) -> None: ...

class LockWaiting(_message.Message):
    __slots__ = ("holder",)
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    holder: LockHolder
    def __init__(self, holder: _Optional[_Union[LockHolder, _Mapping]] = ...) -> None: ...

class LockHolder(_message.Message):
    __slots__ = ("backend_pid", "application_name", "client_addr", "since")
    BACKEND_PID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    backend_pid: int
    application_name: str
    client_addr: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, backend_pid: _Optional[int] = ..., application_name: _Optional[str] = ..., client_addr: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MigrationStarted(_message.Message):
    __slots__ = ("version", "name", "statement_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: int
    name: str
    statement_count: int
    def __init__(self, version: _Optional[int] = ..., name: _Optional[str] = ..., statement_count: _Optional[int] = ...) -> None: ...

class StatementFinished(_message.Message):
    __slots__ = ("version", "statement_index", "statement_count", "duration", "resumed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    version: int
    statement_index: int
    statement_count: int
    duration: _duration_pb2.Duration
    resumed: bool
    def __init__(self, version: _Optional[int] = ..., statement_index: _Optional[int] = ..., statement_count: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., resumed: _Optional[bool] = ...) -> None: ...

class MigrationFinished(_message.Message):
    __slots__ = ("version", "name", "duration", "checksum")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    version: int
    name: str
    duration: _duration_pb2.Duration
    checksum: str
    def __init__(self, version: _Optional[int] = ..., name: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., checksum: _Optional[str] = ...) -> None: ...

class MigrateDone(_message.Message):
    __slots__ = ("current_version", "applied_count")
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    applied_count: int
    def __init__(self, current_version: _Optional[int] = ..., applied_count: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("current_version", "applied", "pending", "lock_holder", "problems")
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LOCK_HOLDER_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    applied: _containers.RepeatedCompositeFieldContainer[AppliedMigration]
    pending: _containers.RepeatedCompositeFieldContainer[PlannedMigration]
    lock_holder: LockHolder
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, current_version: _Optional[int] = ..., applied: _Optional[_Iterable[_Union[AppliedMigration, _Mapping]]] = ..., pending: _Optional[_Iterable[_Union[PlannedMigration, _Mapping]]] = ..., lock_holder: _Optional[_Union[LockHolder, _Mapping]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class AppliedMigration(_message.Message):
    __slots__ = ("version", "name", "checksum", "applied_at", "execution_time", "applied_by", "success")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    version: int
    name: str
    checksum: str
    applied_at: _timestamp_pb2.Timestamp
    execution_time: _duration_pb2.Duration
    applied_by: str
    success: bool
    def __init__(self, version: _Optional[int] = ..., name: _Optional[str] = ..., checksum: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., execution_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., applied_by: _Optional[str] = ..., success: _Optional[bool] = ...) -> None: ...

class VerifySchemaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifySchemaResponse(_message.Message):
    __slots__ = ("matches", "differences")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    matches: bool
    differences: _containers.RepeatedCompositeFieldContainer[SchemaDifference]
    def __init__(self, matches: _Optional[bool] = ..., differences: _Optional[_Iterable[_Union[SchemaDifference, _Mapping]]] = ...) -> None: ...

class SchemaDifference(_message.Message):
    __slots__ = ("object_kind", "object_name", "kind", "expected", "actual")
    OBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    OBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    object_kind: str
    object_name: str
    kind: DifferenceKind
    expected: str
    actual: str
    def __init__(self, object_kind: _Optional[str] = ..., object_name: _Optional[str] = ..., kind: _Optional[_Union[DifferenceKind, str]] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ...) -> None: ...

class LintMigrationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LintMigrationsResponse(_message.Message):
    __slots__ = ("findings", "summary")
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[LintFinding]
    summary: str
    def __init__(self, findings: _Optional[_Iterable[_Union[LintFinding, _Mapping]]] = ..., summary: _Optional[str] = ...) -> None: ...

class LintFinding(_message.Message):
    __slots__ = ("file", "line", "column", "rule", "message", "severity")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    column: int
    rule: str
    message: str
    severity: LintSeverity
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., rule: _Optional[str] = ..., message: _Optional[str] = ..., severity: _Optional[_Union[LintSeverity, str]] = ...) -> None: ...

class WaitForVersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class WaitForVersionResponse(_message.Message):
    __slots__ = ("current_version",)
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    def __init__(self, current_version: _Optional[int] = ...) -> None: ...
