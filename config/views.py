"""Django-level error views: the same JSON envelope as the API, never an HTML page."""

from django.http import JsonResponse

from .exceptions import error_body


def _envelope(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


def not_found(request, *args, **kwargs):
    return _envelope(404, "RESOURCE_NOT_FOUND", f"No endpoint at {request.path}.")


def bad_request(request, exception=None):
    return _envelope(400, "VALIDATION_ERROR", "Bad request.")


def permission_denied(request, exception=None):
    return _envelope(403, "INSUFFICIENT_PERMISSIONS", "Permission denied.")


def page_not_found(request, exception=None):
    return not_found(request)


def server_error(request):
    return _envelope(500, "INTERNAL_ERROR", "An unexpected error occurred.")
