"""Who is calling, and the memberships tenant resolution chooses from: one statement per request.

A token, a JWT and a session each name one user. What the request then needs is that user's
active membership in the organization it names (X-Organization-ID, else organization_id), or,
when it names none, whether the user has exactly one. Looked up separately, that is a statement
for the credential and user, another for the membership and tenant, each compiled by the ORM
on every request. Here it is one hand-written statement per credential and way of naming the
organization, built once per process from the models' fields and prepared on the PostgreSQL
server (config.prepared), that returns the credential, the user, and up to two of those
memberships with their tenants:

    SELECT <token>, <user>, <membership>, <tenant>
    FROM accounts_authtoken c JOIN accounts_user u ON u.id = c.user_id
    LEFT JOIN tenants_membership m ON m.user_id = u.id AND m.status = 'active'
                                   [AND m.tenant_id = <named>]
    LEFT JOIN tenants_tenant t ON t.id = m.tenant_id
    WHERE c.digest = <digest> LIMIT 2

The authentication classes (accounts.authentication) run it and hand the memberships to tenant
resolution (tenants.resolution.MembershipCandidates), which uses them instead of querying.

A process keeps the rows of recent lookups (config.epoch): a request may act on them only
where its admission confirms, in the same Redis step that counts it, that no user, token, API
key, membership or tenant has been written since they were read; else it is authenticated
again from the database. A revoked token, a suspended member or a suspended tenant is
therefore refused on the next request, as without them. An API key's own lookup
(accounts.authentication._find_keys) brings its tenant and its creator's membership in one
statement, and is kept the same way (config.epoch.fetch_kept); its secret is compared on every
request.
"""

import threading
from functools import partial
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.db import connections, router
from django.db.models import Model

from config import epoch
from config.prepared import SelectedModel, built_from
from tenants.models import Membership, MembershipStatus, Tenant
from tenants.resolution import MembershipCandidates, named_organizations, tenant_lookup

from .models import AuthToken, User

# How many of a user's memberships are read when the request names no organization: two tell
# "exactly one" (which resolution then uses) from "several" (the caller must name one).
MEMBERSHIPS_READ = 2

_TOKEN = SelectedModel(AuthToken, "c")
_USER = SelectedModel(User, "u")
_MEMBERSHIP = SelectedModel(Membership, "m")
_TENANT = SelectedModel(Tenant, "t")


class Principal(NamedTuple):
    credential: Model | None  # the AuthToken; None when the credential named the user itself
    user: User
    memberships: tuple[Membership, ...]


class _Statement:
    """One credential's lookup, its SQL built once per process and database for each way of
    naming the organization (none, by id, by slug)."""

    def __init__(self, credential: SelectedModel | None, key_field):
        self._credential = credential
        self._key_field = key_field
        self._sql: dict[tuple[str, str | None], str] = {}
        self._lock = threading.Lock()

    def _build(self, connection, named_by: str | None) -> str:
        # Identifiers come from the models' metadata, quoted by the database's own rule; every
        # value is a parameter (hence the noqa: S608 below).
        quote = connection.ops.quote_name

        def table(model) -> str:
            return quote(model._meta.db_table)

        selected = [_USER, _MEMBERSHIP, _TENANT]
        if self._credential is not None:
            selected.insert(0, self._credential)
            credential = self._credential.model
            source = (
                f"{table(credential)} c INNER JOIN {table(User)} u "
                f"ON u.{quote('id')} = c.{quote(credential._meta.get_field('user').column)}"
            )
            key = f"c.{quote(self._key_field.column)}"
        else:
            source = f"{table(User)} u"
            key = f"u.{quote(self._key_field.column)}"
        membership_user = quote(Membership._meta.get_field("user").column)
        membership_tenant = quote(Membership._meta.get_field("tenant").column)
        named = {
            None: "",
            "pk": f" AND m.{membership_tenant} = %s",
            "slug": (
                f" AND m.{membership_tenant} = (SELECT s.{quote('id')} FROM {table(Tenant)} s "  # noqa: S608
                f"WHERE s.{quote('slug')} = %s)"
            ),
        }[named_by]
        return (
            f"SELECT {', '.join(model.columns(connection) for model in selected)} "  # noqa: S608
            f"FROM {source} "
            f"LEFT OUTER JOIN {table(Membership)} m ON m.{membership_user} = u.{quote('id')} "
            f"AND m.{quote('status')} = %s{named} "
            f"LEFT OUTER JOIN {table(Tenant)} t ON t.{quote('id')} = m.{membership_tenant} "
            f"WHERE {key} = %s LIMIT {MEMBERSHIPS_READ}"
        )

    def sql(self, connection, named_by: str | None) -> str:
        cache_key = (connection.alias, named_by)
        sql = self._sql.get(cache_key)
        if sql is None:
            with self._lock:
                sql = self._sql.setdefault(cache_key, self._build(connection, named_by))
        return sql

    def __call__(self, value, lookup: dict | None, request=None) -> Principal | None:
        alias = router.db_for_read(User)
        connection = connections[alias]
        named_by, named = next(iter(lookup.items())) if lookup else (None, None)
        params = [MembershipStatus.ACTIVE.value]
        if named_by == "pk":
            params.append(_prepared(Tenant._meta.pk, named, connection))
        elif named_by == "slug":
            params.append(named)
        params.append(_prepared(self._key_field, value, connection))
        rows = epoch.fetch_kept(request, alias, self.sql(connection, named_by), params)
        if not rows:
            return None
        return built_from(rows, partial(self._principal, connection=connection))

    def _principal(self, rows, *, connection) -> Principal:
        first, start = rows[0], 0
        credential = None
        if self._credential is not None:
            credential = self._credential.load(first, 0, connection)
            start = self._credential.width
        user = _USER.load(first, start, connection)
        if credential is not None:
            credential.user = user
        memberships = []
        for row in rows:
            membership = _MEMBERSHIP.load(row, start + _USER.width, connection)
            if membership is not None:
                membership.user = user
                membership.tenant = _TENANT.load(
                    row, start + _USER.width + _MEMBERSHIP.width, connection
                )
                memberships.append(membership)
        return Principal(credential, user, tuple(memberships))


def _prepared(field, value, connection):
    return field.get_db_prep_value(field.to_python(value), connection)


_by_token = _Statement(_TOKEN, AuthToken._meta.get_field("digest"))
_by_user = _Statement(None, User._meta.pk)


def _looked_up(request, statement: _Statement, value) -> Principal | None:
    """`statement` run for `value` with the organization the request names, its memberships
    handed to tenant resolution."""
    named = named_organizations(request)
    identifier = named[0] if named else None
    lookup = tenant_lookup(identifier) if identifier is not None else None
    # A name that cannot be an organization's: resolution answers it (not found).
    principal = statement(value, lookup if lookup != {} else None, request)
    if principal is not None and lookup != {}:
        request._request.membership_candidates = MembershipCandidates(
            user_id=principal.user.pk, named=identifier, memberships=principal.memberships
        )
    return principal


def token_principal(request, digest: str) -> Principal | None:
    """The token with this digest, its user and their memberships; None if there is none."""
    return _looked_up(request, _by_token, digest)


def user_principal(request, user_id) -> Principal | None:
    """The user with this id (a JWT's or a session's) and their memberships; None if none."""
    try:
        return _looked_up(request, _by_user, user_id)
    except ValidationError:  # not a user id at all: no such user
        return None
