"""The servicer boundary: a call's request id for the logs, and a ServiceError turned into the call's status.

Below both servers' servicers and servicekit.drain, importing neither.
"""

from __future__ import annotations

import uuid
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from servicekit.errors import ServiceError
from servicekit.ids import valid_id
from servicekit.logs import request_id_var


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
