"""The one application error type and the one exception handler that maps every error to the
envelope `{"error": {"code", "message", "details", "request_id"}}`.

`ERROR_CODES` is the complete list of codes the API answers with: the README and the OpenAPI
schema show it, and tests/api/test_error_codes.py fails when code anywhere emits another.
"""

import errno
import logging
import sqlite3

import psycopg
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import DataError, InterfaceError, InternalError, OperationalError, connection
from django.http import Http404
from kombu.exceptions import OperationalError as BrokerError
from redis import exceptions as redis_errors
from rest_framework import exceptions, status
from rest_framework.response import Response

from . import request_context

logger = logging.getLogger("config.exceptions")

# code -> (HTTP status, when it is answered). The one documented list.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "VALIDATION_ERROR": (400, "The input is invalid; `details` names each offending field."),
    "TENANT_REQUIRED": (400, "No organization given and the caller belongs to several."),
    "AUTHENTICATION_REQUIRED": (401, "No credentials, or invalid, expired or revoked ones."),
    "INSUFFICIENT_PERMISSIONS": (403, "The caller lacks the permission the action needs."),
    "TENANT_SUSPENDED": (403, "The organization is suspended or cancelled."),
    "RESOURCE_NOT_FOUND": (404, "No such resource, or not one the caller can see."),
    "METHOD_NOT_ALLOWED": (405, "The path does not answer this HTTP method."),
    "NOT_ACCEPTABLE": (406, "The Accept header asks for a format the API does not produce."),
    "CONFLICT": (409, "The request conflicts with the resource's current state."),
    "PAYLOAD_TOO_LARGE": (413, "The request body is larger than the API accepts."),
    "UNSUPPORTED_MEDIA_TYPE": (415, "The request body's Content-Type is not accepted here."),
    "PAYMENT_FAILED": (
        402,
        "The payment provider declined the payment; `details` carries its code and reason.",
    ),
    "IDEMPOTENCY_KEY_REUSED": (
        422,
        "The Idempotency-Key was already used with another request (method, path or body).",
    ),
    "RATE_LIMIT_EXCEEDED": (
        429,
        "Too many requests, failed logins or invitations; see Retry-After.",
    ),
    "QUOTA_EXCEEDED": (429, "The organization's quota for a resource is used up."),
    "INTERNAL_ERROR": (500, "An unexpected error; the request id finds it in the logs."),
    "SERVICE_UNAVAILABLE": (
        503,
        "A dependency (database, cache, broker) is unavailable (`details.dependency` names "
        "it; see Retry-After), or a database statement ran past the web processes' limit.",
    ),
    "AI_SERVICE_ERROR": (
        502,
        "The AI provider failed (502), or every route to the model is cooling down (503).",
    ),
}


class ApplicationError(exceptions.APIException):
    """An error raised by services or views with a stable machine-readable code."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "VALIDATION_ERROR"
    default_detail = "The request could not be processed."

    def __init__(self, message: str | None = None, *, details: dict | None = None):
        super().__init__(message or self.default_detail)
        self.message = message or str(self.default_detail)
        self.details = details or {}


class TenantRequired(ApplicationError):
    code = "TENANT_REQUIRED"
    default_detail = (
        "Tenant context is required: send the X-Organization-ID header or the "
        "organization_id query parameter."
    )


class InsufficientPermissions(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "INSUFFICIENT_PERMISSIONS"
    default_detail = "You do not have permission to perform this action."


class TenantSuspended(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "TENANT_SUSPENDED"
    default_detail = "This organization is suspended or cancelled."


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "CONFLICT"
    default_detail = "The request conflicts with the current state of the resource."


class PaymentFailed(ApplicationError):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    code = "PAYMENT_FAILED"
    default_detail = "The payment was declined."


class IdempotencyKeyReused(ApplicationError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "IDEMPOTENCY_KEY_REUSED"
    default_detail = (
        "This Idempotency-Key was already used with a different request; use a new key for a "
        "new request."
    )


def retry_after_seconds(wait: float) -> int:
    """A wait as the whole seconds of Retry-After and `retry_after_seconds` (rounded up)."""
    return int(wait + 0.999)


class RateLimitExceeded(ApplicationError):
    """How often something may be done, counted by a service (the request rate is DRF's
    Throttled): 429 RATE_LIMIT_EXCEEDED, with Retry-After and `retry_after_seconds`."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "RATE_LIMIT_EXCEEDED"
    default_detail = "Too many requests."

    def __init__(
        self, message: str, *, wait: float, details: dict | None = None, retryable: bool = True
    ):
        self.wait = max(wait, 1)
        # False when waiting cannot help: the request alone is larger than the limit.
        self.retryable = retryable
        super().__init__(
            message,
            details={**(details or {}), "retry_after_seconds": retry_after_seconds(self.wait)},
        )


class QuotaExceeded(ApplicationError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "QUOTA_EXCEEDED"
    default_detail = "The organization's quota for this resource is exhausted."


class ServiceUnavailable(ApplicationError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "SERVICE_UNAVAILABLE"
    default_detail = "The service is not ready."


class StatementTimedOut(ServiceUnavailable):
    default_detail = (
        "The database stopped this request: it ran longer than the server allows. Narrow it "
        "(a shorter range, more filters) or try again later."
    )


# PostgreSQL's query_canceled: a statement past statement_timeout (config.connections), or
# cancelled by an operator.
_QUERY_CANCELED = "57014"


# What to wait before trying again when a dependency is down: restarts and failovers take
# seconds; a client that waits this long and tries again is served once the part is back.
DEPENDENCY_RETRY_AFTER_SECONDS = 5
# What the 503 says of each part.
DEPENDENCY_STATES = {
    "database": "the database is not answering",
    "cache": "the cache is not answering",
    "broker": "the task broker is not answering",
    "storage": "the file storage cannot take files (it is full or failing)",
}


# A volume out of room or read-only: never the caller's doing, wherever an OSError says so.
VOLUME_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class StorageUnavailable(OSError):
    """A file could not be written for the volume's reason (full, read-only, failing): raised
    by config.storage, an outage of the storage rather than a bug (an OSError still, for code
    that catches those)."""


class StoredFileMissing(FileNotFoundError):
    """A file a row points at is not in its storage (a volume restored or mounted without it,
    a file removed by hand): raised by config.storage when the file is opened. The API answers
    404 saying so, and logs one line for the operator, rather than a 500."""


class DependencyUnavailable(ServiceUnavailable):
    """A part the request needs (the database, the cache, the task broker, the file storage)
    could not be reached or refused to serve: 503 with Retry-After. Nothing is skipped
    meanwhile: the rate limits and quotas are counted in the cache, and a request that cannot
    be counted is not served. `error` is the failure, for the log line; the answer never
    carries it (a connection error names hosts, ports and users)."""

    def __init__(self, dependency: str, error: Exception | None = None):
        self.wait = DEPENDENCY_RETRY_AFTER_SECONDS
        self.dependency = dependency
        self.error = error
        super().__init__(
            f"The service is briefly unavailable: {DEPENDENCY_STATES[dependency]}. Try again "
            "in a few seconds.",
            details={
                "dependency": dependency,
                "retry_after_seconds": retry_after_seconds(self.wait),
            },
        )


# The cache's failures that are an outage, not a bug: refused or dropped connections and
# timeouts, a server still loading its data or out of memory, a replica or a primary being
# failed over.
_CACHE_DOWN = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.MasterDownError,
)
# PostgreSQL's SQLSTATE classes and codes of a server that cannot serve: connection exceptions
# (08), shutdowns and restarts (57P01-57P05), exhausted resources (53: too many connections,
# disk full, out of memory) and a write sent to a read-only standby during a failover (25006).
_DATABASE_DOWN_SQLSTATES = ("08", "57P", "53", "25006")


def _connection_gone() -> bool:
    raw = connection.connection
    return raw is None or bool(getattr(raw, "closed", False) or getattr(raw, "broken", False))


def unavailable_dependency(exc: BaseException | None) -> str | None:
    """ "database", "cache", "broker" or "storage" when `exc` says that part is down (an
    outage, which the client may wait out), else None (a bug or the client's doing)."""
    if isinstance(exc, _CACHE_DOWN):
        return "cache"
    if isinstance(exc, BrokerError):
        return "broker"
    if isinstance(exc, StorageUnavailable) or (
        isinstance(exc, OSError) and exc.errno in VOLUME_FULL_ERRNOS
    ):
        # The file storage's own writes (config.storage), or a volume out of room wherever it
        # was met: a temporary file (an upload past the memory's share, a workflow's spool).
        return "storage"
    if isinstance(exc, InterfaceError):
        # A closed or broken connection, or a misuse (a closed cursor, a parameter SQLite
        # cannot bind): an outage only if this thread's connection is gone.
        return "database" if _connection_gone() else None
    if isinstance(exc, OperationalError | InternalError):
        cause = exc.__cause__
        if isinstance(cause, psycopg.Error):
            sqlstate = cause.sqlstate
            if sqlstate is not None and sqlstate.startswith(_DATABASE_DOWN_SQLSTATES):
                return "database"
            if sqlstate is None and isinstance(
                cause, psycopg.OperationalError | psycopg.InterfaceError
            ):
                # The client library's own failure: refused, reset, closed by the server, a
                # pool with no connection to give.
                return "database"
        if isinstance(cause, sqlite3.OperationalError) and str(cause).startswith(
            "database is locked"
        ):
            # SQLite's writer lock held past the connection's timeout: a busy moment.
            return "database"
    return None


def as_outage(exc: BaseException | None) -> "DependencyUnavailable | None":
    """`exc` as the API's 503 when it says a dependency is down, else None."""
    dependency = unavailable_dependency(exc)
    return None if dependency is None else DependencyUnavailable(dependency, exc)


def one_line(error: BaseException, limit: int = 500) -> str:
    """A library's error for a log line: its type and message on one line (a psycopg message
    spans several), cut to `limit` characters."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:limit]


class AIServiceError(ApplicationError):
    """An upstream LLM provider failed: 502, or 503 when no upstream may be tried now."""

    status_code = status.HTTP_502_BAD_GATEWAY
    code = "AI_SERVICE_ERROR"
    default_detail = "The AI provider could not answer."

    def __init__(self, message=None, *, details=None, unavailable: bool = False):
        super().__init__(message, details=details)
        if unavailable:
            self.status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class PayloadTooLarge(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "PAYLOAD_TOO_LARGE"
    default_detail = "The request body is too large."


# DRF exception class -> envelope code. Checked in order; first isinstance match wins.
_CODES: list[tuple[type[Exception], str]] = [
    (exceptions.ValidationError, "VALIDATION_ERROR"),
    (exceptions.ParseError, "VALIDATION_ERROR"),
    (exceptions.NotAuthenticated, "AUTHENTICATION_REQUIRED"),
    (exceptions.AuthenticationFailed, "AUTHENTICATION_REQUIRED"),
    (exceptions.PermissionDenied, "INSUFFICIENT_PERMISSIONS"),
    (exceptions.NotFound, "RESOURCE_NOT_FOUND"),
    (exceptions.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
    (exceptions.NotAcceptable, "NOT_ACCEPTABLE"),
    (exceptions.UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE"),
    (exceptions.Throttled, "RATE_LIMIT_EXCEEDED"),
]
# Any other APIException (a library's own subclass) gets the documented code of its status.
# AI_SERVICE_ERROR is raised by the gateway only: another 502 is not an AI provider's failure;
# IDEMPOTENCY_KEY_REUSED by tenants.idempotency only: another 422 is not a reused key.
_RAISED_BY_ONE_PLACE = frozenset({"AI_SERVICE_ERROR", "IDEMPOTENCY_KEY_REUSED"})
_CODE_BY_STATUS = {
    status_code: code
    for code, (status_code, _) in reversed(ERROR_CODES.items())
    if code not in _RAISED_BY_ONE_PLACE
}
# Django's refusals of a body too large to read.
PAYLOAD_TOO_LARGE_ERRORS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def code_for_status(status_code: int) -> str:
    """The documented code of an error status (the first listed, for a status several share)."""
    fallback = "INTERNAL_ERROR" if status_code >= 500 else "VALIDATION_ERROR"
    return _CODE_BY_STATUS.get(status_code, fallback)


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": request_context.current().request_id,
        }
    }


def _message_and_details(exc: exceptions.APIException) -> tuple[str, dict]:
    if isinstance(exc, ApplicationError):
        return exc.message, exc.details
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            return "Invalid input.", detail
        return "Invalid input.", {"non_field_errors": detail}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        return "Request was throttled.", {"retry_after_seconds": retry_after_seconds(exc.wait)}
    return str(exc.detail), {}


def body_too_large_message() -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return f"The request body is larger than the API accepts ({limit} bytes)."


def _as_api_exception(exc):
    """Django's and the database's exceptions that are the client's doing, as API errors."""
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, PAYLOAD_TOO_LARGE_ERRORS):
        return PayloadTooLarge(body_too_large_message())
    if isinstance(exc, SuspiciousOperation):
        return exceptions.ValidationError({"non_field_errors": ["The request is malformed."]})
    if isinstance(exc, StoredFileMissing):
        return exceptions.NotFound("The file is missing from the storage.")
    if (
        isinstance(exc, OperationalError)
        and getattr(exc.__cause__, "sqlstate", None) == _QUERY_CANCELED
    ):
        return StatementTimedOut()
    outage = as_outage(exc)
    if outage is not None:
        return outage
    if isinstance(exc, DataError):
        # A value the database cannot store (NUL byte, out-of-range number): the client's input.
        return exceptions.ValidationError({"non_field_errors": ["A value is not acceptable."]})
    return exc


def is_api_error(exc: Exception) -> bool:
    """Whether the handler answers `exc` as an API error with its own status, rather than as an
    unexpected failure (500 INTERNAL_ERROR, logged with its traceback)."""
    return isinstance(_as_api_exception(exc), exceptions.APIException)


def code_for(exc: exceptions.APIException) -> str:
    code = getattr(exc, "code", None) if isinstance(exc, ApplicationError) else None
    if code is None:
        code = next((c for cls, c in _CODES if isinstance(exc, cls)), None)
    return code or code_for_status(exc.status_code)


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every exception, including unexpected ones, becomes the envelope.

    Building the answer cannot fail: should anything in it raise, the answer is still the
    envelope, with a fixed 500 message."""
    try:
        return _handle(exc, context)
    except Exception:
        logger.exception("The error handler failed while handling %r", type(exc).__name__)
        set_rollback()
        return internal_error_response()


def log_unavailable(exc: DependencyUnavailable, *, where: str) -> None:
    """One line per refused request, without a traceback: during an outage every request
    fails the same way, and the line says which part, where, and the library's reason."""
    reason = one_line(exc.error) if exc.error is not None else "-"
    logger.error("%s unavailable in %s (%s)", exc.dependency, where, reason)


def internal_error_response() -> Response:
    return Response(
        error_body("INTERNAL_ERROR", "An unexpected error occurred."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def set_rollback() -> None:
    # Imported here: DRF's views module imports the API settings' classes (authentication,
    # parsers), which import this module for its error types.
    from rest_framework.views import set_rollback as drf_set_rollback

    drf_set_rollback()


def _handle(exc, context):
    view = context.get("view") if context else None
    if isinstance(exc, StoredFileMissing):
        logger.error(
            "A stored file is missing in %s: %s", view.__class__.__name__, exc.filename or "-"
        )
    exc = _as_api_exception(exc)
    if not isinstance(exc, exceptions.APIException):
        logger.exception("Unhandled error in %s", view.__class__.__name__)
        set_rollback()
        return internal_error_response()

    if isinstance(exc, StatementTimedOut):
        logger.warning("A database statement of %s was cancelled", view.__class__.__name__)
    elif isinstance(exc, DependencyUnavailable):
        log_unavailable(exc, where=view.__class__.__name__)
    code = code_for(exc)
    message, details = _message_and_details(exc)

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(retry_after_seconds(exc.wait))
    set_rollback()
    return Response(error_body(code, message, details), status=exc.status_code, headers=headers)
