"""The one application error type and the one exception handler that maps every error to the
envelope `{"error": {"code", "message", "details", "request_id"}}`."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from . import request_context

logger = logging.getLogger("config.exceptions")


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


class QuotaExceeded(ApplicationError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "QUOTA_EXCEEDED"
    default_detail = "The organization's quota for this resource is exhausted."


class ServiceUnavailable(ApplicationError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "SERVICE_UNAVAILABLE"
    default_detail = "The service is not ready."


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
        return "Request was throttled.", {"retry_after_seconds": int(exc.wait + 0.999)}
    return str(exc.detail), {}


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every exception, including unexpected ones, becomes the envelope."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DataError):
        # A value the database cannot store (NUL byte, out-of-range number): the client's input.
        exc = exceptions.ValidationError({"non_field_errors": ["A value is not acceptable."]})

    if not isinstance(exc, exceptions.APIException):
        logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
        set_rollback()
        return Response(
            error_body("INTERNAL_ERROR", "An unexpected error occurred."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    code = getattr(exc, "code", None) if isinstance(exc, ApplicationError) else None
    if code is None:
        code = next((c for cls, c in _CODES if isinstance(exc, cls)), None)
    if code is None:
        code = str(exc.default_code).upper()
    message, details = _message_and_details(exc)

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait + 0.999))
    set_rollback()
    return Response(error_body(code, message, details), status=exc.status_code, headers=headers)
