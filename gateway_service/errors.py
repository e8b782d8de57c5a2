"""Errors of the LLM gateway, each carrying its gRPC code and ErrorInfo reason (domain "llmgateway").

    ServiceError (servicekit.errors)
     +-- InternalError (servicekit.boundary)  INTERNAL: a bug; the traceback is in the log, not the answer
     +-- GatewayError                       domain "llmgateway"
          +-- InvalidRequest                INVALID_ARGUMENT + BadRequest: the caller's request is malformed
          +-- UnknownModel                  INVALID_ARGUMENT + BadRequest(model): no such route or provider/model
          +-- ProviderRejectedRequest       INVALID_ARGUMENT: a provider refused the request (400); no failover
          +-- NotConfigured                 FAILED_PRECONDITION: no candidate has credentials; names the env var
          +-- ContextTooLong                OUT_OF_RANGE: no candidate has a context window large enough
          +-- AllProvidersFailed            UNAVAILABLE + RetryInfo: every candidate failed (attempts listed)
          |    +-- AllProvidersRateLimited  RESOURCE_EXHAUSTED + RetryInfo: every candidate was rate limited or
          |                                 over its configured budget (QuotaFailure names those)
          +-- UserBudgetExhausted           RESOURCE_EXHAUSTED + QuotaFailure + RetryInfo: the user_id is over budget
          +-- SpendBudgetExhausted          RESOURCE_EXHAUSTED + QuotaFailure + RetryInfo: a dollar budget (the
          |                                 caller's or the user's, per day or month) cannot take the estimate
          +-- SpendBudgetUnavailable        UNAVAILABLE + RetryInfo: dollar budgets cannot be checked (Redis down,
          |                                 on_backend_error: deny)
          +-- MidStreamFailure              UNAVAILABLE: a provider failed after output was sent (policy FAIL)
          +-- DeadlineExhausted             DEADLINE_EXCEEDED: too little of the deadline left for an attempt

ConfigError is not a ServiceError: it stops the process at start-up (exit code 2), naming the exact key path of the
YAML file. It is a servicekit.settings SettingsError, as a bad flag or variable is, so both services report every
configuration error the same way (servicekit.startup.run_command).

Domain code raises these; only the servicer boundary (servicekit.boundary) turns them into a status.
ErrorInfo metadata lists each attempt as `attempt_N: "provider/model reason: message"` so a caller learns
exactly what happened.
"""

from __future__ import annotations

from google.rpc import code_pb2

from servicekit.errors import ServiceError
from servicekit.settings import SettingsError


class ConfigError(SettingsError):
    """The configuration is invalid; the message names the file and the key path."""


class GatewayError(ServiceError):
    domain = "llmgateway"


class InvalidRequest(GatewayError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class UnknownModel(GatewayError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "UNKNOWN_MODEL"


class ProviderRejectedRequest(GatewayError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "PROVIDER_REJECTED_REQUEST"


class NotConfigured(GatewayError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "PROVIDER_NOT_CONFIGURED"


class ContextTooLong(GatewayError):
    code = code_pb2.OUT_OF_RANGE
    reason = "CONTEXT_TOO_LONG"


class AllProvidersFailed(GatewayError):
    code = code_pb2.UNAVAILABLE
    reason = "ALL_PROVIDERS_FAILED"


class AllProvidersRateLimited(AllProvidersFailed):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "ALL_PROVIDERS_RATE_LIMITED"


class UserBudgetExhausted(GatewayError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "USER_BUDGET_EXHAUSTED"


class SpendBudgetExhausted(GatewayError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "SPEND_BUDGET_EXHAUSTED"


class SpendBudgetUnavailable(GatewayError):
    code = code_pb2.UNAVAILABLE
    reason = "SPEND_BUDGET_UNAVAILABLE"


class MidStreamFailure(GatewayError):
    code = code_pb2.UNAVAILABLE
    reason = "MID_STREAM_FAILURE"


class DeadlineExhausted(GatewayError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXHAUSTED"
