"""notifications 0005: webhook URLs stored before they were normalized become URIs; one that
cannot be normalized stays as it was."""

import pytest

from tests.conftest import migrate_to, migrated_back_to
from tests.factories import TenantFactory

BEFORE = ("notifications", "0004_phone_confirmation")
AFTER = ("notifications", "0005_webhook_urls_as_uris")


@pytest.mark.django_db(transaction=True)
def test_stored_urls_become_uris():
    from notifications.models import WebhookEndpoint
    from notifications.signing import encrypt

    with migrated_back_to(BEFORE):
        tenant = TenantFactory()
        urls = {
            "international": "https://Bücher.example/ä",
            "plain": "https://hooks.example.com/in",
            "refused": "https://½/in",
        }
        for name, url in urls.items():
            WebhookEndpoint.objects.create(
                tenant=tenant, name=name, url=url, events=["*"], secret_encrypted=encrypt("x")
            )

        migrate_to(AFTER)

        stored = dict(WebhookEndpoint.objects.values_list("name", "url"))
        assert stored == {
            "international": "https://xn--bcher-kva.example/%C3%A4",
            "plain": "https://hooks.example.com/in",
            "refused": "https://½/in",
        }
