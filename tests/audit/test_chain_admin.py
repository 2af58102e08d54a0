"""The admin's audit pages: read-only checkpoints, chain status per tenant, verify and seal."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit import services
from audit.models import AuditCheckpoint, AuditEvent
from tests.factories import AuditEventFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

CHAINS_URL = "/admin/audit/tenantauditchain/"


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def _tenant_with_events(sealed: int, unsealed: int):
    tenant = TenantFactory()
    for _ in range(sealed):
        AuditEventFactory(tenant=tenant)
    services.chain_seal(tenant_id=tenant.pk)
    for _ in range(unsealed):
        AuditEventFactory(tenant=tenant)
    return tenant


def _row(html: str, slug: str) -> str:
    start = html.index(f'<td class="field-slug">{slug}</td>')
    return html[start : html.index("</tr>", start)]


def test_chain_status_shows_sealed_unsealed_and_checkpoint(admin_client):
    tenant = _tenant_with_events(sealed=3, unsealed=2)
    services.checkpoint_issue(tenant_id=tenant.pk)

    row = _row(admin_client.get(CHAINS_URL).content.decode(), tenant.slug)

    assert '<td class="field-last_seq">3</td>' in row
    assert '<td class="field-unsealed">2</td>' in row
    assert '<td class="field-checkpoint_seq">3</td>' in row


def test_chain_status_query_count_does_not_grow_with_tenants(admin_client):
    def queries(tenants: int) -> int:
        for _ in range(tenants):
            _tenant_with_events(sealed=2, unsealed=1)
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(CHAINS_URL).status_code == 200
        return len(captured)

    assert queries(2) == queries(10)


def test_verify_action_reports_a_valid_chain(admin_client):
    tenant = _tenant_with_events(sealed=3, unsealed=0)

    response = admin_client.post(
        CHAINS_URL, {"action": "verify_chains", "_selected_action": [tenant.pk]}, follow=True
    )

    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"{tenant.slug}: valid, 3 events verified, 0 checkpoints, head "
        f"{AuditEvent.objects.get(tenant=tenant, seq=3).hash}"
    ]


@pytest.mark.postgres
def test_verify_action_names_the_first_broken_event(admin_client):
    tenant = _tenant_with_events(sealed=3, unsealed=0)
    tampered = AuditEvent.objects.get(tenant=tenant, seq=2)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks before ALTER
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER ALL")
        cursor.execute(
            "UPDATE audit_auditevent SET payload = '{\"forged\": true}' WHERE id = %s",
            [tampered.pk],
        )
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER ALL")

    response = admin_client.post(
        CHAINS_URL, {"action": "verify_chains", "_selected_action": [tenant.pk]}, follow=True
    )

    (message,) = [str(m) for m in response.context["messages"]]
    assert message.startswith(f"{tenant.slug}: BROKEN, 1 broken link(s); first at seq 2")
    assert str(tampered.pk) in message


def test_seal_action_seals_the_selected_chains(admin_client):
    tenant = _tenant_with_events(sealed=0, unsealed=4)

    admin_client.post(CHAINS_URL, {"action": "seal_chains", "_selected_action": [tenant.pk]})

    assert not AuditEvent.objects.filter(tenant=tenant, seq__isnull=True).exists()


def test_chain_pages_and_checkpoints_are_read_only(admin_client):
    tenant = _tenant_with_events(sealed=1, unsealed=0)
    checkpoint = services.checkpoint_issue(tenant_id=tenant.pk)

    assert admin_client.get("/admin/audit/auditcheckpoint/").status_code == 200
    assert admin_client.get("/admin/audit/auditcheckpoint/add/").status_code == 403
    assert (
        admin_client.get(f"/admin/audit/auditcheckpoint/{checkpoint.pk}/delete/").status_code == 403
    )
    assert admin_client.get(f"{CHAINS_URL}add/").status_code == 403
    assert AuditCheckpoint.objects.filter(pk=checkpoint.pk).exists()
