import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address

from . import request_context

REQUEST_ID_HEADER = "X-Request-ID"
# A client-supplied id is echoed only when it is short and safe to log and to put in a header.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def client_ip(request) -> str | None:
    """The client address; behind N trusted proxies, the N-th from the right of X-Forwarded-For."""
    address = request.META.get("REMOTE_ADDR") or ""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [
            part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        ]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return None
    return address


class RequestIDMiddleware:
    """Gives every request an id (X-Request-ID echoed when valid, else generated), and every
    response the header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_context.activate(
            request_context.RequestContext(
                request_id=request_id,
                ip_address=client_ip(request),
                user_agent=request.headers.get("User-Agent", "")[:512],
            )
        )
        try:
            response = self.get_response(request)
        finally:
            request_context.deactivate(token)
        response[REQUEST_ID_HEADER] = request_id
        return response
