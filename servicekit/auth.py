"""Who may call: credentials, roles and the refusals they end in (checked by servicekit.gate on the headers).

A call proves who it is with one `authorization: Bearer <token>` header or, failing that, with the
subject of a verified client certificate (mTLS); either must name a caller in the callers file
(servicekit.callers). Two `authorization` headers are refused rather than one of them picked. Each
method needs one role (`Roles`); Health and reflection stay open, so probes and `grpcurl list` need
no credentials.

    no or unknown credentials    UNAUTHENTICATED    ErrorInfo reason UNAUTHENTICATED, metadata {role, method}
    a role the caller lacks      PERMISSION_DENIED  ErrorInfo reason PERMISSION_DENIED, metadata {role, method}
    over its own request rate    RESOURCE_EXHAUSTED ErrorInfo reason CALLER_RATE_LIMITED + RetryInfo

The messages never depend on which callers exist, and a refusal is logged with the peer address and
method (at most once a minute per connection and method), never the token. The caller's name is set
in `caller_var` for the rest of the call (logs, the gateway's budgets): `current_caller()` reads it, and
`caller_holds(role)` asks whether the caller also holds a role that widens what a method shows (e.g.
`usage.read_all`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2

from servicekit.callers import Caller
from servicekit.errors import ServiceError
from servicekit.logs import caller_var

Roles = Mapping[str, str]  # full method name (`/pkg.Service/Method`) -> the role it needs
# Seconds until `caller` may call again, or None when this call is within its rate.
Admit = Callable[[Caller], Awaitable[float | None]]

OPEN_SERVICES = frozenset(
    {
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
NO_ROLE = "(none)"  # what a method missing from the roles table needs: nobody has it
# The authenticated caller's roles; None while no caller was authenticated (a server without callers, or a test).
_roles_var: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("caller_roles", default=None)


class Unauthenticated(ServiceError):
    code = code_pb2.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = code_pb2.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class MissingRequest(ServiceError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "MISSING_REQUEST"


class CallerRateLimited(ServiceError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "CALLER_RATE_LIMITED"


def roles_of(service: ServiceDescriptor, role: str, **by_method: str) -> dict[str, str]:
    """Every method of `service` needing `role`, except those named in `by_method` (method name -> role)."""
    return {f"/{service.full_name}/{m.name}": by_method.get(m.name, role) for m in service.methods}


def current_caller() -> str:
    """The name of the authenticated caller of the current call ("" when the server runs without callers)."""
    return caller_var.get()


def caller_holds(role: str) -> bool:
    """Whether the current call's caller holds `role`; True on a server that authenticates nobody (development)."""
    roles = _roles_var.get()
    return roles is None or role in roles


def authenticated(caller: Caller) -> None:
    """Record `caller` as the current call's (its name and roles, for the rest of the call)."""
    caller_var.set(caller.name)
    _roles_var.set(frozenset(caller.roles))


class BadCredentials(ValueError):
    """Credentials that cannot be read as one token: the message says why, never the token."""


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the `authorization: Bearer <token>` header, if the call carries one ("" for another scheme).

    BadCredentials for more than one `authorization` header: which one counts would be a guess.
    """
    values = [value for key, value in metadata or () if key == "authorization"]
    if len(values) > 1:
        raise BadCredentials("more than one authorization header")
    if not values or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def certificate_subject(context: grpc.aio.ServicerContext) -> str | None:
    """The subject of the client certificate the TLS handshake verified against the client CA, if any."""
    subjects = context.auth_context().get("x509_subject")
    return subjects[0].decode("utf-8", "replace") if subjects else None
