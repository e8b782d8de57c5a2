"""Errors of the schema service.

    ServiceError (servicekit.errors)
     +-- SchemaServiceError             domain "schemaservice"
          +-- DatabaseUnavailable       UNAVAILABLE + RetryInfo: the database cannot be reached
          +-- DatabaseFault             INTERNAL: the database failed a statement for no fault of the input
          |                             (ErrorInfo metadata: sqlstate)
          +-- SchemaMismatch            FAILED_PRECONDITION: tables/columns not as expected (sqlstate class 42)
          +-- ShuttingDown              UNAVAILABLE + RetryInfo: the server is draining; reconnect elsewhere
          +-- MigrationError            FAILED_PRECONDITION: a migration failed or cannot run
          +-- InvalidRequest            INVALID_ARGUMENT + BadRequest: bad input, fields named
          |    +-- BatchTooLarge         a metrics batch over the count or byte limit (the limit named)
          |    +-- RequestIdReused       a request_id already used for a different batch
          |    +-- ValueRejected         the database refused a value validation let through (sqlstate class 22)
          +-- Overloaded                RESOURCE_EXHAUSTED + RetryInfo: too many writes in flight
          +-- DeadlineExceeded          DEADLINE_EXCEEDED: waited too long
"""

from __future__ import annotations

from google.rpc import code_pb2

from servicekit.errors import ServiceError


class SchemaServiceError(ServiceError):
    domain = "schemaservice"


class DatabaseUnavailable(SchemaServiceError):
    code = code_pb2.UNAVAILABLE
    reason = "DATABASE_UNAVAILABLE"


class DatabaseFault(SchemaServiceError):
    code = code_pb2.INTERNAL
    reason = "DATABASE_ERROR"


class SchemaMismatch(SchemaServiceError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "DATABASE_SCHEMA_MISMATCH"


class ShuttingDown(SchemaServiceError):
    code = code_pb2.UNAVAILABLE
    reason = "SHUTTING_DOWN"


class MigrationError(SchemaServiceError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "MIGRATION_FAILED"


class InvalidRequest(SchemaServiceError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class BatchTooLarge(InvalidRequest):
    reason = "BATCH_TOO_LARGE"


class RequestIdReused(InvalidRequest):
    reason = "REQUEST_ID_REUSED"


class ValueRejected(InvalidRequest):
    reason = "VALUE_REJECTED_BY_DATABASE"


class Overloaded(SchemaServiceError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_WRITES_IN_FLIGHT"


class DeadlineExceeded(SchemaServiceError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
