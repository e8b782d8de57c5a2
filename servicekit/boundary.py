"""The servicer boundary: the one place a call's failures become its status, and the call's request id.

Every servicer method of both services runs its body inside its service's one `ErrorBoundary` (`BOUNDARY` in
gateway_service/api/servicers.py and schema_service/api/boundary.py; tests/contracts/test_start_shape.py):

    async with BOUNDARY(context, "GetStatus"):
        report = await status(...)

A ServiceError (domain errors, ServerShuttingDown) leaves as its own status with details; anything else is
a bug, logged with its traceback and answered INTERNAL (never UNKNOWN) without the exception's text. A
service may also pass `translate`, a context manager per method that turns a library's failures into
ServiceErrors first (the schema service's dberrors.database_errors). Below both servers' servicers and
servicekit.drain, importing neither.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.rpc import code_pb2
from grpc_status import rpc_status

from servicekit.errors import ServiceError
from servicekit.ids import valid_id
from servicekit.logs import request_id_var

log = logging.getLogger(__name__)


class InternalError(ServiceError):
    """A bug behind a servicer: INTERNAL, never UNKNOWN; what went wrong is in the service log only."""

    code = code_pb2.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, *, domain: str) -> None:
        super().__init__(message)
        self.domain = domain


@dataclass(frozen=True)
class ErrorBoundary:
    """One per service: `domain` names it in ErrorInfo; `translate(method)` maps a library's failures first."""

    domain: str
    translate: Callable[[str], contextlib.AbstractContextManager[object]] | None = None

    @contextlib.asynccontextmanager
    async def __call__(self, context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
        try:
            with self.translate(method) if self.translate else contextlib.nullcontext():
                yield
        except ServiceError as exc:
            await abort(context, exc)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise  # the call already has its status
        except Exception as exc:
            log.exception("%s failed", method)
            internal = f"internal error ({type(exc).__name__}); see the service log"
            await abort(context, InternalError(internal, domain=self.domain))


def bind_request_id(context: grpc.aio.ServicerContext, request_id: str = "") -> str:
    """The call's request id (request field, then `x-request-id` metadata, else a new one), set for logs.

    Only an id that follows servicekit.ids' rule is used: anything else (a megabyte, a newline) would be copied
    into every log line of the call. The request field is validated again by the service, which names it.
    """
    if not valid_id(request_id):
        request_id = ""
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str) and valid_id(value):
                request_id = value
                break
    request_id = request_id or uuid.uuid4().hex
    request_id_var.set(request_id)
    return request_id


async def abort(context: grpc.aio.ServicerContext, exc: ServiceError) -> NoReturn:
    """End the call with the error's status, details packed in the trailers."""
    status = rpc_status.to_status(exc.to_status_proto())
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: context.abort raises")
