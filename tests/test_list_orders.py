"""The API's lists over tables that grow with use read a page from an index in the page's order.

A page-number list orders by its ordering, then the model's own order, then the key
(config.pagination.in_total_order); a cursor list by `(-created_at, -id)`. Without an index in
that order PostgreSQL reads every row of the organization and sorts them for each page: 137 ms
for the first page of runs of an organization with 200,000 of them, against under a
millisecond walking `(tenant, -created_at, -id)` (docs/performance.md). The plans are read
with sorting priced out of reach, so that where an index gives the order it is the plan; what
is left is a sort no index avoids.

What a plan may still sort is the rows that tie on a column of mostly distinct values (an
`Incremental Sort` over an index on `(tenant, -created_at)`: a handful of rows per page). An
ordering by a status ties most of the organization's rows, so it must be read in order whole,
and so must one status in the list's own order (a filter): in_total_order breaks the status's
ties in the model's order, so one index on `(tenant, status, <the model's order>)` serves both.

Every list of the schema is either here, `GROWING`, or in `BOUNDED` with what bounds it: a new
list has to be put in one of them.
"""

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from drf_spectacular.generators import SchemaGenerator

from notifications.models import WebhookEndpoint
from playground.models import PromptTemplate
from support.models import Ticket
from tests.conftest import plan_nodes
from tests.factories import factory_for

pytestmark = pytest.mark.django_db

# Lists whose rows come with use (calls, runs, jobs, tickets, events...), and the orderings
# that tie most rows: they must be read in order from an index, ties and all.
GROWING = {
    "/api/v1/api-keys/": (),
    "/api/v1/artifacts/": (),
    "/api/v1/audit/events/": (),
    "/api/v1/gateway/calls/": (),
    "/api/v1/notifications/": (),
    "/api/v1/orchestration/": ("status",),
    "/api/v1/playground/templates/{id}/executions/": (),
    "/api/v1/projects/": ("status",),
    "/api/v1/refunds/": ("status",),
    "/api/v1/security/incidents/": ("status",),
    "/api/v1/support/attachments/": (),
    "/api/v1/support/customer-profiles/": (),
    "/api/v1/support/escalations/": ("status",),
    "/api/v1/support/tickets/": ("status",),
    "/api/v1/webhooks/deliveries/": (),
    "/api/v1/webhooks/{id}/deliveries/": (),
    "/api/v1/workflows/": ("status",),
}

# Lists whose size something else bounds, read whole cheaply whatever their order.
BOUNDED = {
    "/api/v1/billing/credit-notes/": "issued by staff against invoices",
    "/api/v1/billing/invoices/": "one per billing period",
    "/api/v1/billing/plans/": "the platform's plans",
    "/api/v1/budgets/": "a few per organization, set by hand",
    "/api/v1/gateway/models/": "the platform's model catalogue",
    "/api/v1/orchestration/templates/": "written by hand",
    "/api/v1/organizations/members/": "the organization's seats (its users quota)",
    "/api/v1/playground/categories/": "the categories of the organization's templates",
    "/api/v1/playground/templates/": "written by hand",
    "/api/v1/roles/": "the platform's roles",
    "/api/v1/security/audits/": "compliance audits, planned by hand",
    "/api/v1/security/data-processing/": "the organization's record of processing activities",
    "/api/v1/support/agents/": "configured by hand",
    "/api/v1/support/decision-rules/": "configured by hand",
    "/api/v1/support/representatives/": "the desk's staff",
    "/api/v1/support/sla-policies/": "configured by hand",
    "/api/v1/support/tickets/{id}/comments/": "one ticket's conversation",
    "/api/v1/tenants/": "the caller's memberships",
    "/api/v1/webhooks/": "the organization's endpoints, capped per organization",
    "/api/v1/webhooks/event-types/": "the platform's event catalogue",
    "/api/v1/workflows/types/": "the platform's workflow registry",
}

# The object a nested list belongs to.
PARENTS = {
    "/api/v1/playground/templates/{id}/executions/": PromptTemplate,
    "/api/v1/support/tickets/{id}/comments/": Ticket,
    "/api/v1/webhooks/{id}/deliveries/": WebhookEndpoint,
}


def _listed_paths() -> set[str]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    paged = {"page", "cursor"}
    return {
        path
        for path, item in schema["paths"].items()
        if paged & {parameter["name"] for parameter in item.get("get", {}).get("parameters", ())}
    }


def test_every_list_is_classified():
    listed = _listed_paths()
    assert listed - GROWING.keys() - BOUNDED.keys() == set(), "put each in GROWING or BOUNDED"
    assert (GROWING.keys() | BOUNDED.keys()) - listed == set(), "no longer lists"
    assert GROWING.keys() & BOUNDED.keys() == set()


def _sorts(sql: str, *, incremental: bool = True) -> list[tuple[str, list]]:
    """The sorting nodes of the statement's plan when any index order beats sorting. Without
    `incremental`, an incremental sort is as costly to the planner as a whole one: where an
    index gives the whole order, the planner's statistics (which vary with what the database
    went through before the test) cannot make it prefer another index and a sort of ties."""
    off = ("seqscan", "sort") if incremental else ("seqscan", "sort", "incremental_sort")
    return [
        (plan["Node Type"], plan.get("Sort Key"))
        for plan in plan_nodes(sql, off=off)
        if plan["Node Type"] in ("Sort", "Incremental Sort")
    ]


def _page_statement(owner, monkeypatch, path: str, ordering: str | None, **filters) -> str:
    """The statement that reads the list's page, as the API sends it. The paginator is told
    there are rows: Django's reads no page of a list it counted empty (the platform's reads
    the page first, config.pagination.CountingPaginator, but not every page: one with rows
    after it is counted too)."""
    monkeypatch.setattr(Paginator, "count", 1_000)
    if path in PARENTS:
        parent = factory_for(PARENTS[path])(tenant=owner.tenant)
        path = path.replace("{id}", str(parent.pk))
    with CaptureQueriesContext(connection) as captured:
        response = owner.client.get(
            path, {**filters, **({"ordering": ordering} if ordering else {})}
        )
    assert response.status_code == 200, response.content[:300]
    pages = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].startswith("SELECT") and " LIMIT " in query["sql"]
    ]
    assert pages, path
    return pages[-1]


@pytest.mark.postgres
@pytest.mark.parametrize("path", sorted(GROWING))
def test_a_page_in_the_default_order_sorts_no_more_than_ties(owner, monkeypatch, path):
    sorts = _sorts(_page_statement(owner, monkeypatch, path, None))
    assert [sort for sort in sorts if sort[0] == "Sort"] == [], sorts


@pytest.mark.postgres
@pytest.mark.parametrize(
    "path,ordering",
    [
        (path, f"{sign}{field}")
        for path, fields in sorted(GROWING.items())
        for field in fields
        for sign in ("", "-")
    ],
)
def test_a_page_by_a_column_of_few_values_sorts_nothing(owner, monkeypatch, path, ordering):
    assert _sorts(_page_statement(owner, monkeypatch, path, ordering), incremental=False) == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    "path,field",
    [(path, field) for path, fields in sorted(GROWING.items()) for field in fields],
)
def test_a_page_of_one_status_in_the_default_order_sorts_nothing(owner, monkeypatch, path, field):
    """The same index, since ties on the status are broken in the model's order."""
    model = resolve(path).func.cls.queryset.model
    value = model._meta.get_field(field).choices[-1][0]
    statement = _page_statement(owner, monkeypatch, path, None, **{field: value})
    assert _sorts(statement, incremental=False) == []
