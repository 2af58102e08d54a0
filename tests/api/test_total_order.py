"""Page-number lists are pages of one total order: their ordering is followed by the model's
own, then the primary key (config.pagination.in_total_order). Ordered by a field many rows
share, each page's own query put the tied rows in its own order on PostgreSQL (a top-N sort
per OFFSET): paging through 95 customers of one tier showed 95 rows of which 90 were
distinct, five never."""

import pytest
from django.db.models import Count, F

from config.pagination import in_total_order
from support.models import CustomerProfile
from tenants.models import Role, Tenant
from tests.factories import TenantFactory
from tests.support.factories import CustomerProfileFactory

pytestmark = pytest.mark.django_db

CUSTOMERS = "/api/v1/support/customer-profiles/"


def every_page(client, url: str, **params) -> list[str]:
    """The ids of every page of `url`, in order, following `next`."""
    seen: list[str] = []
    page = 1
    while True:
        response = client.get(url, {**params, "page": page})
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [row["id"] for row in body["results"]]
        if not body["next"]:
            return seen
        page += 1


@pytest.mark.parametrize("ordering", ["tier", "-tier", "-created_at"])
def test_paging_through_rows_that_tie_shows_each_once(make_caller, ordering):
    owner = make_caller(Role.OWNER)
    customers = {
        str(CustomerProfileFactory(tenant=owner.tenant, tier="gold").pk) for _ in range(95)
    }

    seen = every_page(owner.client, CUSTOMERS, ordering=ordering, page_size=7)

    assert len(seen) == 95
    assert set(seen) == customers


def test_rows_that_tie_are_in_the_models_order_and_descending_is_the_exact_reverse(make_caller):
    """Within a tier, customers come by name (their own order), not by their random ids; and
    `-tier` lists exactly the reverse of `tier`, which is what lets one index serve both."""
    owner = make_caller(Role.OWNER)
    for name in ("Dora", "Ann", "Cleo", "Bea", "Eve"):
        for tier in ("gold", "free"):
            CustomerProfileFactory(tenant=owner.tenant, tier=tier, name=name)
    CustomerProfileFactory(tenant=owner.tenant, tier="gold", name="Ann")  # a name that ties too

    ascending = every_page(owner.client, CUSTOMERS, ordering="tier", page_size=3)
    descending = every_page(owner.client, CUSTOMERS, ordering="-tier", page_size=3)

    assert descending == ascending[::-1]
    names = {
        str(customer.pk): (customer.tier, customer.name)
        for customer in CustomerProfile.objects.filter(tenant=owner.tenant)
    }
    assert [names[pk] for pk in ascending] == sorted(names[pk] for pk in ascending)


def test_paging_through_the_default_order_shows_each_once(staff_client):
    """The tenants' own ordering is their name, which need not be unique."""
    tenants = {str(TenantFactory(name="Acme").pk) for _ in range(45)}

    seen = every_page(staff_client, "/api/v1/tenants/", page_size=4)

    assert len(seen) == 45 and set(seen) == tenants


def order_of(queryset) -> list:
    return list(queryset.query.order_by)


@pytest.mark.parametrize(
    ("ordering", "total"),
    [
        ((), ["name", "pk"]),  # the tenants' ordering, ["name"]
        # The customers' ordering is ["name", "id"]: what ties on the terms asked for is in it,
        # backwards after a descending term.
        (("tier",), ["tier", "name", "id"]),
        (("-tier",), ["-tier", "-name", "-id"]),
        (("-tier", "name"), ["-tier", "name", "id"]),
        (("name", "-created_at"), ["name", "-created_at", "-id"]),
        (("-id",), ["-id"]),
        (("tier", "pk"), ["tier", "pk"]),
    ],
)
def test_the_models_order_then_the_primary_key_end_every_ordering(ordering, total):
    queryset = Tenant.objects.all() if not ordering else CustomerProfile.objects.order_by(*ordering)

    assert order_of(in_total_order(queryset)) == total


def test_expressions_keep_their_direction():
    queryset = CustomerProfile.objects.order_by(F("lifetime_value_cents").desc(nulls_last=True))

    expression, *added = order_of(in_total_order(queryset))

    assert expression is queryset.query.order_by[0]
    assert added == ["-name", "-id"]  # after a descending term, the customers' order backwards
    assert order_of(in_total_order(CustomerProfile.objects.order_by(F("pk").desc()))) == [
        F("pk").desc()
    ]


def test_what_cannot_take_the_key_is_left_as_it_is():
    grouped = CustomerProfile.objects.values("tier").annotate(n=Count("pk")).order_by("tier")
    random = CustomerProfile.objects.order_by("?")
    sliced = CustomerProfile.objects.order_by("tier")[:5]
    rows = [1, 2, 3]

    assert in_total_order(grouped) is grouped
    assert in_total_order(random) is random
    assert in_total_order(sliced) is sliced
    assert in_total_order(rows) is rows
