"""config.services.model_update: the diff-set-save step the services share."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.services import model_update
from tenants.models import Tenant
from tests.factories import TenantFactory

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


def test_only_the_changed_fields_and_updated_at_are_saved():
    tenant = TenantFactory(name="Acme", contact_name="Ann")
    before = tenant.updated_at
    # Another writer changes a column in between; the update must not overwrite it.
    Tenant.objects.filter(pk=tenant.pk).update(description="set elsewhere")

    with CaptureQueriesContext(connection) as queries:
        changes = model_update(instance=tenant, data={"name": "Acme 2", "contact_name": "Ann"})

    assert changes == {"name": {"from": "Acme", "to": "Acme 2"}}
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.name, stored.description) == ("Acme 2", "set elsewhere")
    assert stored.updated_at > before
    (update,) = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert '"description"' not in update


def test_nothing_changed_saves_nothing():
    tenant = TenantFactory(name="Acme")

    with CaptureQueriesContext(connection) as queries:
        changes = model_update(instance=tenant, data={"name": "Acme"})

    assert changes == {}
    assert queries.captured_queries == []
