"""The session and message middleware make their stores on first use and answer every request
as Django's own middleware does (config.middleware.LazySessionMiddleware,
LazyMessageMiddleware)."""

import pytest
from django.contrib import messages
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, override_settings
from django.utils.functional import empty

from config.middleware import LazyMessageMiddleware, LazySessionMiddleware

pytestmark = pytest.mark.django_db


def _untouched(request):
    return HttpResponse("ok")


def _reads_session(request):
    return HttpResponse(str(request.session.get("seen", "")))


def _writes_session(request):
    request.session["seen"] = "yes"
    return HttpResponse("ok")


def _flushes_session(request):
    request.session.flush()
    return HttpResponse("ok")


def _adds_message(request):
    messages.info(request, "Saved.")
    return HttpResponse("ok")


def _reads_messages(request):
    return HttpResponse(" ".join(str(message) for message in messages.get_messages(request)))


def _answer(middleware_classes, view, cookies):
    """The response of `view` behind the session and message middleware given, for a GET with
    `cookies`; the request with it."""
    request = RequestFactory().get("/api/v1/organizations/current")
    request.COOKIES.update(cookies)
    handler = view
    for middleware_class in reversed(middleware_classes):
        handler = middleware_class(handler)
    return handler(request), request


def _observable(response) -> dict:
    """What a client sees of the session and message middleware's work."""
    return {
        "status": response.status_code,
        "body": response.content,
        "cookies": {
            name: (cookie.value != "", cookie["max-age"] == 0)
            for name, cookie in response.cookies.items()
        },
        "vary": response.get("Vary"),
    }


def _session_cookie():
    """A valid session, saved, as its cookie."""
    _, request = _answer([SessionMiddleware], _writes_session, {})
    return {"sessionid": request.session.session_key}


def _message_cookie():
    response, _ = _answer([SessionMiddleware, MessageMiddleware], _adds_message, {})
    return {"messages": response.cookies["messages"].value}


VIEWS = [_untouched, _reads_session, _writes_session, _flushes_session, _adds_message]
VIEWS += [_reads_messages]
COOKIES = {
    "none": lambda: {},
    "session": _session_cookie,
    "unknown session": lambda: {"sessionid": "x" * 32},
    "malformed session": lambda: {"sessionid": "short"},
    "messages": _message_cookie,
    "session and messages": lambda: {**_session_cookie(), **_message_cookie()},
}


@pytest.mark.parametrize("view", VIEWS, ids=lambda view: view.__name__.strip("_"))
@pytest.mark.parametrize("cookies", list(COOKIES), ids=str)
@pytest.mark.parametrize("save_every_request", [False, True], ids=["", "save every request"])
def test_answers_as_djangos_middleware(view, cookies, save_every_request):
    sent = COOKIES[cookies]()
    with override_settings(SESSION_SAVE_EVERY_REQUEST=save_every_request):
        django, _ = _answer([SessionMiddleware, MessageMiddleware], view, sent)
        lazy, _ = _answer([LazySessionMiddleware, LazyMessageMiddleware], view, sent)
    assert _observable(lazy) == _observable(django)


def test_a_request_that_uses_neither_makes_neither_store():
    response, request = _answer([LazySessionMiddleware, LazyMessageMiddleware], _untouched, {})

    assert request.session._wrapped is empty
    assert request._messages._wrapped is empty
    assert not response.cookies
    assert "Vary" not in response


def test_a_session_cookie_makes_the_store_at_once():
    _, request = _answer([LazySessionMiddleware], _untouched, _session_cookie())

    assert type(request.session) is SessionMiddleware(_untouched).SessionStore


def test_a_session_written_on_first_use_is_saved_and_sent():
    response, _ = _answer([LazySessionMiddleware], _writes_session, {})

    key = response.cookies["sessionid"].value
    answer, _ = _answer([LazySessionMiddleware], _reads_session, {"sessionid": key})
    assert answer.content == b"yes"
    assert response["Vary"] == "Cookie"


def test_a_message_added_on_first_use_reaches_the_next_page():
    response, _ = _answer([LazySessionMiddleware, LazyMessageMiddleware], _adds_message, {})

    sent = {"messages": response.cookies["messages"].value}
    answer, _ = _answer([LazySessionMiddleware, LazyMessageMiddleware], _reads_messages, sent)
    assert answer.content == b"Saved."
    assert answer.cookies["messages"]["max-age"] == 0


def test_the_admin_still_finds_the_middleware_it_checks_for():
    from django.contrib.admin.checks import check_dependencies

    assert [error.id for error in check_dependencies()] == []
