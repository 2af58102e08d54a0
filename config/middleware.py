import functools
import logging
import re
import uuid
from abc import ABC, abstractmethod

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from django.http.request import HttpHeaders
from django.urls import Resolver404, resolve
from django.utils.functional import SimpleLazyObject, empty
from django.utils.ipv6 import MAX_IPV6_ADDRESS_LENGTH

from . import request_context
from .connections import drop_closed_connections
from .exceptions import as_outage, log_unavailable
from .views import (
    dependency_unavailable_response,
    envelope_for_status,
    payload_too_large,
    server_error,
)

logger = logging.getLogger("config.middleware")

REQUEST_ID_HEADER = "X-Request-ID"
# Read from META: `request.headers.get` raises and catches a KeyError for every header a
# request does not send, on every request.
_REQUEST_ID_META = HttpHeaders.to_wsgi_name(REQUEST_ID_HEADER)
# A client-supplied id is echoed only when it is short and safe to log and to put in a header.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


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
    # Django refuses any longer address (an IPv4 one is shorter still): a longer header value
    # is refused here, before it could take room among the kept answers.
    if len(address) > MAX_IPV6_ADDRESS_LENGTH:
        return None
    return address if _is_ip_address(address) else None


# Django's validator parses the address and builds its error on every call; a process sees
# few distinct client addresses at a time, so each one's answer is kept (a bounded number).
@functools.lru_cache(maxsize=4096)
def _is_ip_address(address: str) -> bool:
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return False
    return True


class DualModeMiddleware(ABC):
    """A middleware that serves WSGI and ASGI alike: under ASGI it stays async, so an async
    view (the LLM gateway) runs on the event loop instead of a thread per request. Every
    middleware in MIDDLEWARE must be async-capable for that (Django's own are)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return self.handle(request, self.get_response)

    async def __acall__(self, request):
        return await self.ahandle(request, self.get_response)

    @abstractmethod
    def handle(self, request, get_response):
        """The sync path: call `get_response(request)` and return the response."""

    @abstractmethod
    async def ahandle(self, request, get_response):
        """The async path: await `get_response(request)` and return the response."""


def request_context_of(request) -> request_context.RequestContext:
    """The context RequestIDMiddleware made for `request`, for work that outlives the
    middleware's call (the current one if a middleware before it answered)."""
    return getattr(request, "request_context", None) or request_context.current()


class RequestIDMiddleware(DualModeMiddleware):
    """Gives every request an id (X-Request-ID echoed when valid, else generated), and every
    response the header. First in MIDDLEWARE, it also drops the kept database connections the
    server has closed since the last request (config.connections), before anything queries."""

    @staticmethod
    def _activate(request):
        incoming = request.META.get(_REQUEST_ID_META, "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        # Kept on the request for work that outlives this middleware's call (the gateway's
        # async part under playground.serving).
        request.request_context = request_context.RequestContext(
            request_id=request_id,
            ip_address=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        )
        return request_context.activate(request.request_context)

    def handle(self, request, get_response):
        drop_closed_connections()
        token = self._activate(request)
        try:
            response = get_response(request)
        finally:
            request_context.deactivate(token)
            close_unfinished_uploads(request)
        response[REQUEST_ID_HEADER] = request.request_id
        return response

    async def ahandle(self, request, get_response):
        token = self._activate(request)
        try:
            response = await get_response(request)
        finally:
            request_context.deactivate(token)
            close_unfinished_uploads(request)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


def close_unfinished_uploads(request) -> None:
    """Close, and so delete, the temporary file of an upload whose body was not read to its end
    (a full volume, a client that went away midway). Django closes the files of a body it
    parsed whole, once the response is sent; a file it was still writing stayed open, its part
    of the upload on disk, for as long as anything kept the request."""
    for handler in vars(request).get("_upload_handlers", ()):
        file = getattr(handler, "file", None)
        if file is not None and not file.closed:
            file.close()


# Pages made for people, where Django's HTML errors are the right answer.
_HTML_PATH_PREFIXES = ("/admin/", "/api-auth/", "/invitations/", "/billing/checkout/")


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class JSONErrorMiddleware(DualModeMiddleware):
    """Outside the pages made for people, every error is the JSON envelope.

    - A body declared larger than `DATA_UPLOAD_MAX_MEMORY_SIZE` is refused (413) before any
      middleware or view reads it; a multipart body to an upload endpoint may carry its file
      on top (`upload_allowance`), which the view then limits exactly.
    - An error answered in another format (Django's DEBUG pages for a missing upload or a
      malformed request, a library's HTML) becomes the envelope with the same status.
    - An exception that escapes Django's own error handling (a DEBUG page or handler that fails
      in turn, e.g. on text it cannot encode) becomes a 500 envelope, not the server's
      text/plain page.
    - A view that fails because the database, the cache or the broker is down answers 503 with
      Retry-After (`process_exception`), as the API's exception handler does.

    Placed right after RequestIDMiddleware, so the envelope carries the request id.
    """

    def handle(self, request, get_response):
        html_page = request.path.startswith(_HTML_PATH_PREFIXES)
        if not html_page and _declared_too_large(request):
            return payload_too_large(request)
        try:
            response = get_response(request)
        except Exception:
            logger.exception("Unhandled error outside the API's exception handler")
            return server_error(request)
        return self._finish(response, html_page)

    async def ahandle(self, request, get_response):
        html_page = request.path.startswith(_HTML_PATH_PREFIXES)
        if not html_page and _declared_too_large(request):
            return payload_too_large(request)
        try:
            response = await get_response(request)
        except Exception:
            logger.exception("Unhandled error outside the API's exception handler")
            return server_error(request)
        return self._finish(response, html_page)

    def process_exception(self, request, exception):
        """A view outside the API (an admin page) that failed because a dependency is down:
        the same 503 the API answers, logged as one line rather than Django's traceback for
        every request of the outage. Anything else is left to Django's handling."""
        outage = as_outage(exception)
        if outage is None:
            return None
        log_unavailable(outage, where=request.path)
        return dependency_unavailable_response(outage)

    @staticmethod
    def _finish(response, html_page: bool):
        if response.status_code >= 400 and not html_page and not _is_json(response):
            return envelope_for_status(response.status_code)
        return response


class StaticFilesMiddleware(DualModeMiddleware):
    """WhiteNoise's static files, in both modes: WhiteNoise's own middleware is sync-only,
    and one sync-only middleware would put every ASGI request back on a thread."""

    def __init__(self, get_response):
        super().__init__(get_response)
        from whitenoise.middleware import WhiteNoiseMiddleware

        # WhiteNoise's middleware, given a get_response that is never called: its file
        # lookup and response building are what this class uses.
        self.whitenoise = WhiteNoiseMiddleware(lambda request: None)

    def _static_file(self, request):
        whitenoise = self.whitenoise
        if whitenoise.autorefresh:
            return whitenoise.find_file(request.path_info)
        return whitenoise.files.get(request.path_info)

    def handle(self, request, get_response):
        static_file = self._static_file(request)
        if static_file is not None:
            return self.whitenoise.serve(static_file, request)
        return get_response(request)

    async def ahandle(self, request, get_response):
        if self.whitenoise.autorefresh:  # development: looks at the file system
            static_file = await sync_to_async(self._static_file)(request)
        else:  # a dictionary lookup
            static_file = self._static_file(request)
        if static_file is not None:
            return await sync_to_async(self.whitenoise.serve)(static_file, request)
        return await get_response(request)


def upload_allowance(request) -> int:
    """The file bytes the view routed for `request` accepts in a multipart body on top of
    DATA_UPLOAD_MAX_MEMORY_SIZE: the setting its handler names in `upload_limit_setting`
    (`config.views.accepts_uploads`), else 0. Resolved only for a body over the limit."""
    if not request.META.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
        return 0
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return 0
    view_class = getattr(match.func, "cls", None)
    action = (getattr(match.func, "actions", None) or {}).get(request.method.lower())
    handler = getattr(view_class, action, None) if view_class and action else None
    setting = getattr(handler, "upload_limit_setting", None)
    return int(getattr(settings, setting)) if setting else 0


def _declared_too_large(request) -> bool:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    if limit is None or declared <= limit:
        return False
    return declared > limit + upload_allowance(request)


def _unused(value) -> bool:
    """True for a lazy object nothing has looked into."""
    return type(value) is SimpleLazyObject and value._wrapped is empty


class LazySessionMiddleware(SessionMiddleware):
    """Django's SessionMiddleware, with the session store made when first used.

    API clients send a credential, not a session cookie, and most requests never touch the
    session; making the store anyway (the cached-db backend looks up its cache) was about 1.5 %
    of a trivial read's CPU under load. A request without a session cookie whose session was
    never used is answered as Django's middleware answers it: no cookie set or deleted, no
    `Vary: Cookie`. With a session cookie, or with SESSION_SAVE_EVERY_REQUEST, the store is
    Django's in every step."""

    def process_request(self, request):
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if session_key is None:
            request.session = SimpleLazyObject(functools.partial(self.SessionStore, None))
        else:
            request.session = self.SessionStore(session_key)

    def process_response(self, request, response):
        if _unused(getattr(request, "session", None)) and not settings.SESSION_SAVE_EVERY_REQUEST:
            return response
        return super().process_response(request, response)


class LazyMessageMiddleware(MessageMiddleware):
    """Django's MessageMiddleware, with the message storage made when first used.

    Only the admin and the pages made for people show messages; making the storage (a cookie
    and a session storage behind FallbackStorage) on every request was about 2.5 % of a
    trivial API read's CPU under load. A storage never used has nothing to save: Django's
    `update` of one stores nothing and leaves the cookie as it is, so skipping it answers the
    same."""

    def process_request(self, request):
        request._messages = SimpleLazyObject(functools.partial(default_storage, request))

    def process_response(self, request, response):
        if _unused(getattr(request, "_messages", None)):
            return response
        return super().process_response(request, response)
