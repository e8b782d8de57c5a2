"""Who may call: a server interceptor that authenticates each call and checks its method's role.

A call proves who it is with `authorization: Bearer <token>` metadata or, failing that, with the
subject of a verified client certificate (mTLS); either must name a caller in the callers file
(servicekit.callers). Each method needs one role (`Roles`); Health and reflection stay open, so
probes and `grpcurl list` need no credentials.

    no or unknown credentials    UNAUTHENTICATED    ErrorInfo reason UNAUTHENTICATED, metadata {role, method}
    a role the caller lacks      PERMISSION_DENIED  ErrorInfo reason PERMISSION_DENIED, metadata {role, method}
    over its own request rate    RESOURCE_EXHAUSTED ErrorInfo reason CALLER_RATE_LIMITED + RetryInfo

The messages never depend on which callers exist, and a refusal is logged with the peer address and
method, never the token. The caller's name is set in `caller_var` for the rest of the call (logs,
the gateway's budgets): `current_caller()` reads it, and `caller_holds(role)` asks whether the caller
also holds a role that widens what a method shows (e.g. `usage.read_all`).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2

from servicekit.boundary import abort
from servicekit.callers import Caller, CallersSource
from servicekit.errors import ServiceError
from servicekit.handlers import WrappingInterceptor
from servicekit.logs import caller_var

log = logging.getLogger(__name__)

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


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if the call carries one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def certificate_subject(context: grpc.aio.ServicerContext) -> str | None:
    """The subject of the client certificate the TLS handshake verified against the client CA, if any."""
    subjects = context.auth_context().get("x509_subject")
    return subjects[0].decode("utf-8", "replace") if subjects else None


class AuthInterceptor(WrappingInterceptor):
    """Authenticates every call of a method outside OPEN_SERVICES, then checks its role and rate."""

    def __init__(self, callers: CallersSource, roles: Roles, admit: Admit | None = None) -> None:
        super().__init__(self._checked)
        self.callers = callers
        self.roles = roles
        self.admit = admit

    @asynccontextmanager
    async def _checked(self, method: str, kind: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if method.lstrip("/").rpartition("/")[0] not in OPEN_SERVICES:
            await self._check(method, context)
        yield

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        role = self.roles.get(method, NO_ROLE)
        details = {"role": role, "method": method}
        caller = self._identify(context)
        if caller is None:
            _log_refusal("unauthenticated", context, method)
            await abort(context, Unauthenticated("missing or unknown credentials", metadata=details))
        caller_var.set(caller.name)
        _roles_var.set(frozenset(caller.roles))
        if role not in caller.roles:
            _log_refusal("permission denied", context, method, role)
            await abort(context, PermissionDenied(f"this method needs the role {role}", metadata=details))
        retry_after = await self.admit(caller) if self.admit is not None else None
        if retry_after is not None:
            await abort(context, CallerRateLimited("the caller's request rate is used up", retry_after_s=retry_after))

    def _identify(self, context: grpc.aio.ServicerContext) -> Caller | None:
        callers = self.callers.current()
        token = bearer_token(context.invocation_metadata())
        if token is not None:  # a token present decides, even next to a certificate
            return callers.by_bearer(token)
        subject = certificate_subject(context)
        return callers.by_certificate(subject) if subject is not None else None


def _log_refusal(what: str, context: grpc.aio.ServicerContext, method: str, role: str | None = None) -> None:
    extra = {"peer": context.peer(), "method": method}
    if role is not None:
        extra["role"] = role
    log.warning(f"call refused: {what}", extra=extra)
