"""What a list request costs beyond its rows: a page counted from itself when it is the last one
(config.pagination.CountingPaginator), and no FilterSet made when no filter is named
(config.filters.FilterBackend)."""

import django_filters
import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext

from config.filters import FilterBackend, _filters_only_given_values, _names_a_filter
from notifications.filters import NotificationFilter
from tenants.models import Role
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory

from .endpoints import ENDPOINTS

pytestmark = pytest.mark.django_db

MEMBERS_URL = "/api/v1/organizations/members"


def _counts(captured) -> list[str]:
    return [query["sql"] for query in captured if "COUNT(" in query["sql"].upper()]


def _members(make_caller, total: int):
    """An owner's caller whose organization has `total` members (the owner among them)."""
    caller = make_caller(Role.OWNER)
    for _ in range(total - 1):
        MembershipFactory(tenant=caller.tenant, role=Role.MEMBER)
    return caller


def _page(caller, **parameters):
    with CaptureQueriesContext(connection) as captured:
        response = caller.client.get(MEMBERS_URL, parameters)
    assert response.status_code == 200, response.content
    return response.json(), captured


class TestCountedFromThePage:
    def test_a_list_that_fits_on_one_page_is_not_counted_apart(self, make_caller):
        caller = _members(make_caller, 3)

        body, captured = _page(caller)

        assert body["count"] == 3 and len(body["results"]) == 3
        assert body["next"] is None and body["previous"] is None
        assert _counts(captured) == []

    def test_an_empty_page_one_counts_zero(self, make_caller):
        caller = _members(make_caller, 1)

        body, captured = _page(caller, role=Role.ADMIN)

        assert body == {"count": 0, "next": None, "previous": None, "results": []}
        assert _counts(captured) == []

    def test_the_last_page_counts_the_rows_before_it_and_on_it(self, make_caller):
        caller = _members(make_caller, 7)

        body, captured = _page(caller, page=3, page_size=3)

        assert body["count"] == 7 and len(body["results"]) == 1
        assert body["next"] is None and "page=2" in body["previous"]
        assert _counts(captured) == []

    def test_a_list_exactly_one_page_long_has_no_next_page(self, make_caller):
        caller = _members(make_caller, 4)

        body, captured = _page(caller, page_size=4)

        assert body["count"] == 4 and len(body["results"]) == 4
        assert body["next"] is None
        assert _counts(captured) == []

    def test_a_page_with_rows_after_it_is_counted(self, make_caller):
        caller = _members(make_caller, 7)

        body, captured = _page(caller, page=2, page_size=3)

        assert body["count"] == 7 and len(body["results"]) == 3
        assert "page=3" in body["next"] and body["previous"]
        assert len(_counts(captured)) == 1

    def test_the_pages_together_list_every_row_once(self, make_caller):
        caller = _members(make_caller, 7)
        everything = {row["id"] for row in _page(caller, page_size=100)[0]["results"]}

        pages = [_page(caller, page=page, page_size=3)[0] for page in (1, 2, 3)]

        assert {page["count"] for page in pages} == {7}
        listed = [row["id"] for page in pages for row in page["results"]]
        assert len(listed) == len(set(listed)) and set(listed) == everything

    def test_the_last_page_by_name(self, make_caller):
        caller = _members(make_caller, 7)

        body, _ = _page(caller, page="last", page_size=3)

        assert body["count"] == 7 and len(body["results"]) == 1 and body["next"] is None

    @pytest.mark.parametrize("page", ["4", "99", str(2**62), "9" * 40])
    def test_a_page_past_the_end_is_404(self, make_caller, page):
        caller = _members(make_caller, 7)

        response = caller.client.get(MEMBERS_URL, {"page": page, "page_size": 3})

        assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


class TestFilterSetsMadeOnlyWhenNamed:
    @pytest.fixture
    def made(self, monkeypatch):
        """The FilterSets made while the test runs (every one goes through this __init__)."""
        made = []
        make = django_filters.filterset.BaseFilterSet.__init__

        def counting(filterset, *args, **kwargs):
            made.append(type(filterset).__name__)
            make(filterset, *args, **kwargs)

        monkeypatch.setattr(django_filters.filterset.BaseFilterSet, "__init__", counting)
        return made

    def test_a_list_naming_no_filter_makes_no_filterset(self, make_caller, made):
        caller = _members(make_caller, 3)

        body, _ = _page(caller, ordering="-joined_at", unknown="x")

        assert body["count"] == 3
        assert made == []

    def test_a_list_naming_a_filter_is_filtered(self, make_caller, made):
        caller = _members(make_caller, 3)

        body, _ = _page(caller, role=Role.OWNER)

        assert [row["role"] for row in body["results"]] == [Role.OWNER]
        assert made == ["MemberFilter"]

    def test_a_filter_s_bad_value_is_still_refused(self, make_caller):
        caller = _members(make_caller, 1)

        response = caller.client.get(MEMBERS_URL, {"role": "emperor"})

        error = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert "role" in error["details"]

    def test_a_parameter_of_a_filter_s_widget_names_it(self):
        filters = {"created": None}
        assert _names_a_filter(["created_after"], filters)
        assert _names_a_filter(["created"], filters)
        assert not _names_a_filter(["create", "ordering"], filters)

    def test_a_filterset_with_rules_of_its_own_is_always_made(self):
        # The notifications' list shows the in-app channel unless another is asked for.
        assert not _filters_only_given_values(NotificationFilter)

    def test_filterset_fields_make_their_class_once(self):
        view_class = next(
            e.view_class
            for e in ENDPOINTS
            if e.action == "list" and getattr(e.view_class, "filterset_fields", None)
        )
        queryset = view_class.queryset.all()

        first = FilterBackend().get_filterset_class(view_class(), queryset)
        again = FilterBackend().get_filterset_class(view_class(), queryset.all())

        assert first is again and set(first.base_filters) == set(view_class.filterset_fields)


def _filterset_class(view_class):
    return FilterBackend().get_filterset_class(view_class(), view_class.queryset.all())


# The list views whose FilterSet is skipped when the request names none of its filters.
SKIPPED_UNNAMED = sorted(
    {
        e.view_class
        for e in ENDPOINTS
        if e.action == "list"
        and e.model is not None
        and (
            getattr(e.view_class, "filterset_class", None)
            or getattr(e.view_class, "filterset_fields", None)
        )
        and _filters_only_given_values(_filterset_class(e.view_class))
    },
    key=lambda view_class: view_class.__name__,
)


def test_most_lists_skip_their_filterset_unnamed():
    assert len(SKIPPED_UNNAMED) >= 20


@pytest.mark.parametrize("view_class", SKIPPED_UNNAMED, ids=lambda v: v.__name__)
def test_a_filterset_given_no_value_leaves_its_queryset_as_it_is(view_class):
    """What makes skipping one safe: given no value, each of its filters filters nothing."""
    queryset = view_class.queryset.all()

    filterset = _filterset_class(view_class)(data=QueryDict(), queryset=queryset)

    assert filterset.is_valid(), filterset.errors
    assert str(filterset.qs.query) == str(queryset.query)
