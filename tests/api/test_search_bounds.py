"""`search=` is bounded on every list that offers it (config.filters.SearchFilter).

Each word of a search is its own OR of matches over the searched fields, so the query grows with
the words; thousands of them (a URL holds them) made one PostgreSQL backend use memory until the
kernel killed it, and PostgreSQL restarted every connection. Past the bounds the answer is a
400 in the envelope; within them the search works as before, a repeated word searched once.
"""

import pytest
from django.test import RequestFactory
from rest_framework.request import Request

from config.filters import SearchFilter
from tenants.models import Role
from tests.api.endpoints import ENDPOINTS
from tests.conftest import assert_envelope

pytestmark = pytest.mark.django_db

SEARCHABLE_LISTS = sorted(
    {
        endpoint.url()
        for endpoint in ENDPOINTS
        if endpoint.action == "list" and getattr(endpoint.view_class, "search_fields", None)
    }
)


def test_the_searchable_lists_are_found():
    assert len(SEARCHABLE_LISTS) >= 10
    assert "/api/v1/support/tickets/" in SEARCHABLE_LISTS


@pytest.fixture
def caller(make_caller):
    """An owner who is also platform staff, so that every list answers."""
    return make_caller(Role.OWNER, is_staff=True)


def _words(count: int) -> str:
    return " ".join(f"w{index}" for index in range(count))


@pytest.mark.parametrize("url", SEARCHABLE_LISTS)
def test_more_words_than_the_bound_is_a_400(caller, url):
    response = caller.client.get(url, {"search": _words(SearchFilter.MAX_TERMS + 1)})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {
        "search": [f"At most {SearchFilter.MAX_TERMS} words or quoted phrases."]
    }


@pytest.mark.parametrize("url", SEARCHABLE_LISTS)
def test_a_longer_search_than_the_bound_is_a_400(caller, url):
    response = caller.client.get(url, {"search": "x" * (SearchFilter.MAX_LENGTH + 1)})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"search": [f"At most {SearchFilter.MAX_LENGTH} characters."]}


@pytest.mark.parametrize("url", SEARCHABLE_LISTS)
def test_searches_within_the_bounds_answer(caller, url):
    at_the_bound = caller.client.get(url, {"search": _words(SearchFilter.MAX_TERMS)})
    one_word_repeated = caller.client.get(url, {"search": "same " * 100})

    assert at_the_bound.status_code == 200, at_the_bound.content[:300]
    assert one_word_repeated.status_code == 200, one_word_repeated.content[:300]


def _terms(search: str) -> list[str]:
    request = Request(RequestFactory().get("/", {"search": search}))
    return SearchFilter().get_search_terms(request)


def test_a_repeated_word_is_searched_once_whatever_its_case():
    assert _terms('Invoice invoice INVOICE "late fee" pdf "Late Fee"') == [
        "Invoice",
        "late fee",
        "pdf",
    ]


def test_a_quoted_phrase_counts_as_one_word():
    phrase = '"' + _words(SearchFilter.MAX_TERMS * 2) + '"'

    assert len(_terms(phrase)) == 1


def test_the_schema_documents_the_bound(caller):
    schema = caller.client.get("/api/schema/", {"format": "json"}).json()
    parameters = schema["paths"]["/api/v1/support/tickets/"]["get"]["parameters"]
    search = next(parameter for parameter in parameters if parameter["name"] == "search")

    assert search["schema"]["maxLength"] == SearchFilter.MAX_LENGTH
    assert f"at most {SearchFilter.MAX_TERMS}" in search["description"]
