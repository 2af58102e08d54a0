"""Factories of the accounts app's models (registered with tests.factories.factory_for)."""

import secrets

import factory
from django.db import transaction

from accounts.models import APIKey, User
from accounts.services import api_key_create

TEST_PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", TEST_PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class APIKeyFactory(factory.django.DjangoModelFactory):
    """A key row with a random, unknown secret (use issue_api_key for a usable key string)."""

    class Meta:
        model = APIKey

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Key {n}")
    scopes = factory.LazyFunction(lambda: ["read"])
    created_by = factory.SubFactory(UserFactory)
    key_id = factory.LazyFunction(lambda: secrets.token_hex(16))
    secret_hash = factory.LazyFunction(lambda: secrets.token_hex(32))
    key_prefix = factory.LazyAttribute(lambda key: f"cp_{key.key_id[:4]}...{key.secret_hash[:4]}")


def issue_api_key(membership, scopes=("read",), **fields) -> tuple[APIKey, str]:
    """A key created through the service by `membership`'s user; returns (row, key string)."""
    with transaction.atomic():
        return api_key_create(
            tenant=membership.tenant,
            actor=membership.user,
            name=fields.pop("name", "Test key"),
            scopes=list(scopes),
            **fields,
        )
