"""Errors of the schema service.

    ServiceError (servicekit.errors)
     +-- InternalError (servicekit.boundary)    INTERNAL: a bug; the traceback is in the log, not the answer
     +-- ServerShuttingDown (servicekit.drain)  UNAVAILABLE + RetryInfo, SERVER_SHUTTING_DOWN: the replica is
     |                                          draining (new calls refused, long streams ended); go elsewhere
     +-- SchemaServiceError             domain "schemaservice"
          +-- DatabaseUnavailable       UNAVAILABLE + RetryInfo: the database cannot be reached, is restarting or full
          +-- DatabaseConflict          UNAVAILABLE + RetryInfo: a query was aborted (deadlock, serialization
          |                             failure, lock not available, cancelled); the same call may pass again
          +-- DatabaseRefused           FAILED_PRECONDITION: the database refused the work as it stands
          |                             (a missing privilege, a constraint, an unknown SQLSTATE class)
          +-- SchemaMismatch            FAILED_PRECONDITION: tables/columns not as expected (SQLSTATE class 42)
          +-- MigrationError            FAILED_PRECONDITION: a migration failed or cannot run
          +-- InvalidRequest            INVALID_ARGUMENT + BadRequest: bad input, fields named
          |    +-- BatchTooLarge         a metrics batch over the count or byte limit (the limit named)
          |    +-- RequestIdReused       a request_id already used for a different batch
          |    +-- ValueRejected         the database refused a value validation let through (SQLSTATE class 22)
          +-- Overloaded                RESOURCE_EXHAUSTED + RetryInfo: too many writes in flight
          +-- DeadlineExceeded          DEADLINE_EXCEEDED: waited too long

ConfigError is not a ServiceError: it stops the process at start-up (exit code 2), naming the setting, its flag
and its environment variable. The service's only configuration is its flags and environment, so it is
servicekit.settings' SettingsError itself (the gateway's ConfigError, about its YAML file, is one too).

Domain code raises these; only the servicer boundary (schema_service.api.boundary) turns them into a status.
schema_service.dberrors turns every database failure into one of the Database*/SchemaMismatch/ValueRejected
errors, with the SQLSTATE in the ErrorInfo metadata; its docstring has the table.
"""

from __future__ import annotations

from google.rpc import code_pb2

from servicekit.errors import ServiceError
from servicekit.settings import SettingsError

ConfigError = SettingsError


class SchemaServiceError(ServiceError):
    domain = "schemaservice"


class DatabaseUnavailable(SchemaServiceError):
    code = code_pb2.UNAVAILABLE
    reason = "DATABASE_UNAVAILABLE"


class DatabaseConflict(SchemaServiceError):
    # UNAVAILABLE, not ABORTED: the caller retries just this call (writes carry a request_id), which is
    # gRPC's litmus test for UNAVAILABLE; ABORTED asks for a retry of a whole read-modify-write sequence.
    code = code_pb2.UNAVAILABLE
    reason = "DATABASE_CONFLICT"


class DatabaseRefused(SchemaServiceError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "DATABASE_REFUSED"


class SchemaMismatch(SchemaServiceError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "DATABASE_SCHEMA_MISMATCH"


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
    reason = "DATABASE_VALUE_REJECTED"


class Overloaded(SchemaServiceError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_WRITES_IN_FLIGHT"


class DeadlineExceeded(SchemaServiceError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
