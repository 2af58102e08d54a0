import secrets
from datetime import timedelta

import factory
from django.db import transaction
from django.utils import timezone

from accounts.models import APIKey, User, hash_secret
from accounts.services import api_key_create
from audit.models import AuditEvent
from tenants.models import (
    Invitation,
    InvitationStatus,
    Membership,
    MembershipStatus,
    Role,
    Tenant,
    TenantStatus,
)

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


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    status = TenantStatus.ACTIVE


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER
    status = MembershipStatus.ACTIVE
    joined_at = factory.LazyFunction(timezone.now)


class AuditEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditEvent

    tenant = factory.SubFactory(TenantFactory)
    event_type = "test.happened"
    payload = factory.LazyFunction(dict)
    created_at = factory.LazyFunction(timezone.now)


class APIKeyFactory(factory.django.DjangoModelFactory):
    """A key row with a random, unknown secret (use issue_api_key for a usable key string)."""

    class Meta:
        model = APIKey

    tenant = factory.SubFactory(TenantFactory)
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


class InvitationFactory(factory.django.DjangoModelFactory):
    """A pending invitation on an `invited` membership to a new address. Only the digest is
    stored; the token is kept on the instance as `invitation.token`."""

    class Meta:
        model = Invitation

    tenant = factory.SubFactory(TenantFactory)
    email = factory.Sequence(lambda n: f"invitee{n}@example.com")
    membership = factory.SubFactory(
        MembershipFactory,
        tenant=factory.SelfAttribute("..tenant"),
        user=None,
        invited_email=factory.SelfAttribute("..email"),
        status=MembershipStatus.INVITED,
        joined_at=None,
        invited_at=factory.LazyFunction(timezone.now),
    )
    token = factory.LazyFunction(lambda: secrets.token_urlsafe(32))
    token_digest = factory.LazyAttribute(lambda invitation: hash_secret(invitation.token))
    status = InvitationStatus.PENDING
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))

    @classmethod
    def _create(cls, model_class, *args, token, **kwargs):
        invitation = super()._create(model_class, *args, **kwargs)
        invitation.token = token
        return invitation


class ThemeFactory(factory.django.DjangoModelFactory):
    """A tenant's saved theme (the model by label keeps the imports above as they are)."""

    class Meta:
        model = "tenants.Theme"
        django_get_or_create = ("tenant",)

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Theme {n}")
