"""The schema service's one servicer error boundary (servicekit.boundary), used by every servicer method.

Every failure leaves as a typed status, never UNKNOWN: domain errors pass through, database failures anywhere
in a call are mapped by schema_service.dberrors (SQLSTATE in the metadata, RetryInfo when retryable), bugs are
INTERNAL.
"""

from __future__ import annotations

from schema_service.dberrors import database_errors
from schema_service.errors import SchemaServiceError
from servicekit.boundary import ErrorBoundary

BOUNDARY = ErrorBoundary(SchemaServiceError.domain, translate=database_errors)
