"""Per-request context (request id, client address) that services and logging read.

Set by RequestIDMiddleware so that `audit.services.record()` and log lines know the request
without every service taking the request as an argument.
"""

import logging
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    ip_address: str | None = None
    user_agent: str = ""


_NO_REQUEST = RequestContext()
_current: ContextVar[RequestContext] = ContextVar("request_context")


def current() -> RequestContext:
    return _current.get(_NO_REQUEST)


def activate(context: RequestContext):
    return _current.set(context)


def deactivate(token) -> None:
    _current.reset(token)


class RequestIDLogFilter(logging.Filter):
    """Adds `request_id` to every log record ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current().request_id or "-"
        return True
