"""Factories of the tenants app's models (registered with tests.factories.factory_for)."""

import secrets
from datetime import timedelta

import factory
from django.utils import timezone

from accounts.models import hash_secret
from tenants.models import (
    Invitation,
    InvitationStatus,
    Membership,
    MembershipStatus,
    Role,
    Tenant,
    TenantStatus,
    Theme,
)


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
    user = factory.SubFactory("tests.accounts.factories.UserFactory")
    role = Role.MEMBER
    status = MembershipStatus.ACTIVE
    joined_at = factory.LazyFunction(timezone.now)


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
    """A tenant's saved theme."""

    class Meta:
        model = Theme
        django_get_or_create = ("tenant",)

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Theme {n}")
