"""config.negotiation.ContentNegotiation answers exactly as DRF's DefaultContentNegotiation,
which it calls for everything but the requests that ask for nothing in particular."""

import itertools

import pytest
from django.http import Http404
from django.test import RequestFactory
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

from config.negotiation import ContentNegotiation
from config.renderers import CSVRenderer, JSONRenderer

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "text/csv",
    "application/json; indent=4",
    "application/json;indent=4",
    " application/json",
    "application/*",
    "text/html",
    "text/html, */*;q=0.1",
    "application/json, text/csv",
    "",
    ",",
    "*/*; q=0",
    "APPLICATION/JSON",
]
QUERIES = ["", "page=2", "format=json", "format=csv", "format=", "format=xml", "%66ormat=csv"]
SUFFIXES = [None, "", "json", "csv"]
RENDERER_LISTS = [
    [JSONRenderer()],
    [JSONRenderer(), CSVRenderer()],
    [CSVRenderer(), JSONRenderer()],
]


def _answer(negotiation, accept, query, suffix, renderers):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(
        RequestFactory().get(f"/api/v1/x/?{query}" if query else "/api/v1/x/", **headers)
    )
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers, suffix)
    except (exceptions.NotAcceptable, Http404) as refused:
        return type(refused).__name__
    return type(renderer).__name__, media_type


@pytest.mark.parametrize(
    "renderers", RENDERER_LISTS, ids=lambda r: "+".join(type(x).__name__ for x in r)
)
def test_every_choice_is_drf_s(renderers):
    for accept, query, suffix in itertools.product(ACCEPTS, QUERIES, SUFFIXES):
        ours = _answer(ContentNegotiation(), accept, query, suffix, renderers)
        drf = _answer(DefaultContentNegotiation(), accept, query, suffix, renderers)
        assert ours == drf, (accept, query, suffix)


def test_a_request_that_asks_for_nothing_in_particular_is_answered_without_parsing(monkeypatch):
    def parsing(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(DefaultContentNegotiation, "select_renderer", parsing)
    renderers = [JSONRenderer(), CSVRenderer()]
    for accept in (None, "*/*", "application/json"):
        answer = _answer(ContentNegotiation(), accept, "page=2", None, renderers)
        assert answer == ("JSONRenderer", "application/json")


def test_the_api_uses_it():
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_CONTENT_NEGOTIATION_CLASS is ContentNegotiation
