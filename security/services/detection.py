"""Incidents the platform raises itself, from what it can see of a tenant:

- a broken audit chain (the daily verification with audit's ChainVerifier): one critical
  `system_compromise` incident per broken link, keyed by its event, so a chain that stays
  broken is reported once and a later, separate break again (the verifier names one link per
  edited or removed event, never a cascade);
- a burst of locked-out logins against the tenant's members: at least
  SECURITY_LOCKOUT_BURST_THRESHOLD refused attempts (django-axes lockouts, recorded as
  `auth.login.failed` with reason `locked_out` on the platform chain) within one window of
  SECURITY_LOCKOUT_BURST_WINDOW_MINUTES: one `unauthorized_access` incident per window.

Windows are aligned on the epoch (00:00, 00:15, ... for 15 minutes), so every run, a late or
a doubled one included, names the same window; `incident_raise` opens an incident once per key.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from audit.services import chain_verify
from tenants.models import Membership, Tenant

from ..models import Incident, IncidentCategory, RaisedBy, Severity
from .incidents import incident_raise


def _link_key(link) -> str:
    return f"audit_chain:{link.event_id or f'seq-{link.seq}'}"


def audit_chain_check(*, tenant: Tenant) -> list:
    """Verify the tenant's audit chain; each broken link not reported yet opens its incident.
    Returns the incidents opened (none when the chain holds or every break is known)."""
    result = chain_verify(tenant_id=tenant.pk)
    if result.chain_valid:
        return []
    reported = set(
        Incident.objects.filter(tenant=tenant, raised_by=RaisedBy.AUDIT_CHAIN).values_list(
            "source_key", flat=True
        )
    )
    new = [link for link in result.broken_links if _link_key(link) not in reported]
    opened = []
    for link in new:
        where = link.event_id or f"seq-{link.seq}"
        incident = incident_raise(
            tenant=tenant,
            raised_by=RaisedBy.AUDIT_CHAIN,
            source_key=_link_key(link),
            title=f"Audit log chain broken at event {link.seq} ({link.event_type or 'checkpoint'})",
            description=(
                "The daily verification of the organization's audit log found that its hash "
                f"chain no longer holds at event {where} (seq {link.seq}, "
                f"{link.event_type or 'checkpoint'}): {link.reason}. A sealed event was changed "
                "or removed outside the application. The chain has "
                f"{len(result.broken_links)} broken link(s) in all; GET /api/v1/audit/verify/ "
                "lists them."
            ),
            severity=Severity.CRITICAL,
            category=IncidentCategory.SYSTEM_COMPROMISE,
        )
        if incident is not None:
            opened.append(incident)
    return opened


def _window(now: datetime) -> tuple[datetime, timedelta]:
    size = timedelta(minutes=settings.SECURITY_LOCKOUT_BURST_WINDOW_MINUTES)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((now - epoch) // size) * size, size


def _lockouts_by_tenant(start: datetime, end: datetime) -> dict:
    """{tenant_id: (refused attempts, members' emails, source addresses)} for the window."""
    attempts = Counter()
    addresses: dict[str, set] = {}
    for identifier, address in AuditEvent.objects.filter(
        tenant__isnull=True,
        event_type="auth.login.failed",
        payload__reason="locked_out",
        created_at__gte=start,
        created_at__lt=end,
    ).values_list("payload__identifier", "ip_address"):
        if isinstance(identifier, str) and identifier:
            key = identifier.strip().lower()
            attempts[key] += 1
            if address:
                addresses.setdefault(key, set()).add(address)
    if not attempts:
        return {}
    users = dict(
        User.objects.annotate(address=Lower("email"))
        .filter(address__in=list(attempts))
        .values_list("pk", "address")
    )
    found: dict = {}
    for tenant_id, user_id in Membership.objects.filter(user_id__in=list(users)).values_list(
        "tenant_id", "user_id"
    ):
        email = users[user_id]
        count, emails, ips = found.get(tenant_id, (0, set(), set()))
        found[tenant_id] = (
            count + attempts[email],
            emails | {email},
            ips | addresses.get(email, set()),
        )
    return found


def login_lockout_bursts_check(*, now: datetime | None = None) -> list:
    """Open an `unauthorized_access` incident in each tenant whose members met the threshold of
    locked-out logins in the current window or the one before (a burst at a window's end is
    still seen after it closes). Returns the incidents opened."""
    now = now or timezone.now()
    current, size = _window(now)
    threshold = settings.SECURITY_LOCKOUT_BURST_THRESHOLD
    opened = []
    for start in (current - size, current):
        bursts = {
            tenant_id: burst
            for tenant_id, burst in _lockouts_by_tenant(start, start + size).items()
            if burst[0] >= threshold
        }
        for tenant in Tenant.objects.filter(pk__in=list(bursts)):
            count, emails, ips = bursts[tenant.pk]
            minutes = int(size.total_seconds() // 60)
            incident = incident_raise(
                tenant=tenant,
                raised_by=RaisedBy.LOGIN_LOCKOUTS,
                source_key=f"login_lockouts:{start.isoformat()}",
                title=(
                    f"Burst of locked-out logins: {count} attempts against {len(emails)} member(s)"
                ),
                description=(
                    f"{count} login attempts were refused because the account was locked out "
                    f"(too many failed passwords) between {start.isoformat()} and "
                    f"{(start + size).isoformat()} ({minutes} minutes), against: "
                    f"{', '.join(sorted(emails))}. Source addresses: "
                    f"{', '.join(sorted(ips)[:20]) or 'unknown'}."
                ),
                severity=Severity.HIGH,
                category=IncidentCategory.UNAUTHORIZED_ACCESS,
                detected_at=now,
            )
            if incident is not None:
                opened.append(incident)
    return opened
