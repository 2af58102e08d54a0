"""Incidents the platform raises itself, from what it can see of a tenant:

- a broken audit chain (the daily verification with audit's ChainVerifier): one critical
  `system_compromise` incident per break, keyed by the first broken event, so a chain that
  stays broken is reported once and a later, separate break again;
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

from ..models import IncidentCategory, RaisedBy, Severity
from .incidents import incident_raise

# Broken links named in the incident's description (the verify endpoint lists them all).
LISTED_LINKS = 10


def audit_chain_check(*, tenant: Tenant):
    """Verify the tenant's audit chain; a break opens its incident (None when the chain holds
    or the break is already reported)."""
    result = chain_verify(tenant_id=tenant.pk)
    if result.chain_valid:
        return None
    first = result.broken[0]
    where = first.event_id or f"seq-{first.seq}"
    lines = [
        f"- seq {link.seq}, {link.event_type or 'checkpoint'} ({link.event_id or '-'}): "
        f"{link.reason}"
        for link in result.broken[:LISTED_LINKS]
    ]
    more = len(result.broken) - LISTED_LINKS
    if more > 0:
        lines.append(f"- and {more} more (GET /api/v1/audit/verify/ lists them all)")
    return incident_raise(
        tenant=tenant,
        raised_by=RaisedBy.AUDIT_CHAIN,
        source_key=f"audit_chain:{where}",
        title=f"Audit log chain broken at event {first.seq} ({first.event_type or 'checkpoint'})",
        description=(
            "The daily verification of the organization's audit log found that its hash chain "
            f"no longer holds: {len(result.broken)} broken link(s), the first at event "
            f"{where}. Sealed events were changed or removed outside the application.\n"
            + "\n".join(lines)
        ),
        severity=Severity.CRITICAL,
        category=IncidentCategory.SYSTEM_COMPROMISE,
    )


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
