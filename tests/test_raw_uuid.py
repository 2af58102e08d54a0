"""config.db.raw_uuid: an id as raw SQL takes it on each database, from a UUID or its text."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from config.db import raw_uuid
from tests.factories import TenantFactory

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


@pytest.mark.parametrize("given", [lambda pk: pk, str, lambda pk: str(pk).upper()])
def test_a_uuid_or_its_text_finds_the_row_in_raw_sql(given):
    tenant = TenantFactory()
    TenantFactory()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT slug FROM tenants_tenant WHERE id = %s", [raw_uuid(given(tenant.pk))]
        )
        assert cursor.fetchall() == [(tenant.slug,)]


def test_text_that_is_not_a_uuid_is_refused():
    with pytest.raises(ValidationError):
        raw_uuid("not-a-uuid")
