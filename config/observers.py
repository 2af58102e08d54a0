"""Response observers: what other layers want to see of every answered API request.

The request path (tenants.api's base view) lives below the apps that read its facts
(analytics), so it cannot call them; an app registers an observer here from its AppConfig.ready
instead, and the base view calls each one, once per response, after the response is final.
An observer must be cheap (no database, no round trip: buffer and flush later) and must not
raise; one that does is logged and skipped, never turned into the client's error.
"""

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

_observers: list[Callable] = []


def register(observer: Callable) -> None:
    if observer not in _observers:
        _observers.append(observer)


def observe(request, response) -> None:
    for observer in _observers:
        try:
            observer(request, response)
        except Exception:
            logger.exception("response observer %s failed", getattr(observer, "__name__", observer))
