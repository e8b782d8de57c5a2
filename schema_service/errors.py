"""Errors of the schema service.

    ServiceError (servicekit.errors)
     +-- SchemaServiceError             domain "schemaservice"
          +-- DatabaseUnavailable       UNAVAILABLE + RetryInfo: the database cannot be reached
          +-- MigrationError            FAILED_PRECONDITION: a migration failed or cannot run
          +-- InvalidRequest            INVALID_ARGUMENT + BadRequest: bad input, fields named
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


class MigrationError(SchemaServiceError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "MIGRATION_FAILED"


class InvalidRequest(SchemaServiceError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class Overloaded(SchemaServiceError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_WRITES_IN_FLIGHT"


class DeadlineExceeded(SchemaServiceError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
