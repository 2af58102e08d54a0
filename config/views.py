"""Django-level error views: the same JSON envelope as the API, never an HTML page."""

import sys

from django.http import JsonResponse

from .exceptions import (
    PAYLOAD_TOO_LARGE_ERRORS,
    DependencyUnavailable,
    as_outage,
    body_too_large_message,
    code_for_status,
    error_body,
)

# Short messages for errors answered outside the API's exception handler.
_MESSAGES = {
    400: "Bad request.",
    401: "Authentication required.",
    403: "Permission denied.",
    404: "Not found.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Conflict.",
    413: "The request body is too large.",
    415: "Unsupported media type.",
    429: "Too many requests.",
    500: "An unexpected error occurred.",
    503: "The service is unavailable.",
}


def _envelope(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


def envelope_for_status(status: int) -> JsonResponse:
    """The envelope for an error response produced outside the API's exception handler, with
    the status's documented code."""
    message = _MESSAGES.get(status, "The request could not be processed.")
    return _envelope(status, code_for_status(status), message)


def not_found(request, *args, **kwargs):
    return _envelope(404, "RESOURCE_NOT_FOUND", f"No endpoint at {request.path}.")


def payload_too_large(request, exception=None):
    return _envelope(413, "PAYLOAD_TOO_LARGE", body_too_large_message())


def bad_request(request, exception=None):
    if isinstance(exception, PAYLOAD_TOO_LARGE_ERRORS):
        return payload_too_large(request, exception)
    return _envelope(400, "VALIDATION_ERROR", "Bad request.")


def permission_denied(request, exception=None):
    return _envelope(403, "INSUFFICIENT_PERMISSIONS", "Permission denied.")


def page_not_found(request, exception=None):
    return not_found(request)


def server_error(request):
    """Django's handler500, called while the exception is being handled: a dependency's outage
    (the session or lockout middleware reading the cache, an admin page the database) is the
    API's 503 with Retry-After, as in a view; anything else the 500."""
    outage = as_outage(sys.exc_info()[1])
    if outage is not None:
        return dependency_unavailable_response(outage)
    return _envelope(500, "INTERNAL_ERROR", "An unexpected error occurred.")


def dependency_unavailable_response(exc: DependencyUnavailable) -> JsonResponse:
    response = JsonResponse(error_body(exc.code, exc.message, exc.details), status=503)
    response["Retry-After"] = str(exc.details["retry_after_seconds"])
    return response


def accepts_uploads(setting: str):
    """Mark a view handler that takes a multipart file of up to `settings.<setting>` bytes: the
    request body limit (config.middleware) lets such a body through, and the handler checks the
    file's own limit."""

    def mark(handler):
        handler.upload_limit_setting = setting
        return handler

    return mark
