"""Every error the gateway returns, in the OpenAI envelope.

    GatewayError                      -> {"error": {"message", "type", "param", "code"}}
    ├── BadRequest              400  invalid_request_error
    ├── AuthenticationFailed    401  invalid_request_error / invalid_api_key
    ├── PermissionDenied        403  permission_error / insufficient_scope
    │   ├── PolicyDenied        403  permission_error / provenance_policy_denied
    │   └── KeyNotAllowed       403  permission_error / model_not_allowed_for_key
    ├── NotFound                404  invalid_request_error / not_found (model_not_found, ...)
    ├── MethodNotAllowed        405  invalid_request_error / method_not_allowed (with Allow)
    ├── Conflict                409  invalid_request_error / version_conflict
    ├── PayloadTooLarge         413  invalid_request_error / request_too_large
    ├── RateLimited             429  rate_limit_error (upstream 429 passed through)
    │   └── LimitExceeded       429  rate_limit_error / rate_limit_exceeded (a key's or
    │       │                        tenant's own limit: Retry-After, x-ratelimit-* headers)
    │       └── BudgetExceeded  429  insufficient_quota / budget_exceeded (hard budget)
    ├── InternalError           500  api_error / internal_error
    ├── UpstreamFailed          502  api_error / upstream_error
    ├── NoBackendAvailable      503  api_error / no_backend_available
    ├── RegistryBusy            503  api_error / registry_busy (the gateway's own database)
    ├── RegistryUnavailable     503  api_error / registry_unavailable (snapshot too stale)
    ├── GatewaySaturated        503  api_error / gateway_saturated (no free upstream connection)
    ├── LimitsUnavailable       503  api_error / limits_unavailable (Redis down, fail closed)
    └── UpstreamTimedOut        504  api_error / upstream_timeout

The status/type/code of each class is fixed here and nowhere else; the official SDK maps the
status to its exception class (AuthenticationError, PermissionDeniedError, NotFoundError, ...).
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.error_code = code or self.code

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.error_code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


# The two 401 messages, worded as OpenAI words them, the same on /v1 and /admin. "Missing"
# includes ``Authorization: Bearer `` with nothing after it: what a pasted
# ``curl -H "Authorization: Bearer $KEY"`` sends when the variable is unset.
MISSING_API_KEY = "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."
INCORRECT_API_KEY = "Incorrect API key provided."


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class PolicyDenied(PermissionDenied):
    code = "provenance_policy_denied"

    def __init__(self, message: str, *, rule_ids: tuple[str, ...] = ()):
        super().__init__(message)
        self.rule_ids = rule_ids


class KeyNotAllowed(PermissionDenied):
    """The API key's allow-list (routes, models) does not include what the request names."""

    code = "model_not_allowed_for_key"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The path exists, the method does not: the response carries ``Allow`` (RFC 9110)."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...]):
        super().__init__(message)
        self.allow = allow


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "version_conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class InternalError(GatewayError):
    """A bug or an unexpected failure inside the gateway; details go to the log only."""

    status = 500
    type = "api_error"
    code = "internal_error"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class LimitExceeded(RateLimited):
    """A key's or its tenant's own limit refused the request (``router.limiter``); ``limit``
    names the limit that fired (e.g. ``key:rpm``), ``headers`` are the response's
    ``Retry-After`` and ``x-ratelimit-*`` headers."""

    def __init__(
        self, message: str, *, limit: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.headers = headers


class BudgetExceeded(LimitExceeded):
    """A hard budget is spent. 429 as OpenAI answers an exhausted quota (its SDK raises
    ``RateLimitError``), with a code of its own: waiting a minute does not help."""

    type = "insufficient_quota"
    code = "budget_exceeded"


class UpstreamFailed(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class NoBackendAvailable(GatewayError):
    status = 503
    type = "api_error"
    code = "no_backend_available"


class RegistryBusy(GatewayError):
    """The registry database did not answer in time (no pooled connection free, or the write
    lock held by another writer past the lock timeout): the gateway's own saturation, not a
    backend's fault and not a conflict. Nothing changed; the client may retry."""

    status = 503
    type = "api_error"
    code = "registry_busy"
    retry_after_s: ClassVar[int] = 1


class RegistryUnavailable(GatewayError):
    """The gateway could not confirm its registry snapshot against the database for longer
    than ``max_staleness_s``: a key revoked or a policy tightened since may not be in it, so it
    refuses rather than route on it (fail closed)."""

    status = 503
    type = "api_error"
    code = "registry_unavailable"


class GatewaySaturated(GatewayError):
    """The gateway's own capacity ran out (its connection pool to a backend), not a backend."""

    status = 503
    type = "api_error"
    code = "gateway_saturated"


class LimitsUnavailable(GatewayError):
    """The shared limit counters (Redis) did not answer and ``limits_redis_failure`` is
    ``closed``: no request is served past a limit that cannot be checked."""

    status = 503
    type = "api_error"
    code = "limits_unavailable"


class UpstreamTimedOut(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"
