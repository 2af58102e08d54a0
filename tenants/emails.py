"""Invitation emails: built from templates inside the service's transaction, sent after it
commits (so no email announces an invitation that was rolled back).

The token is in the message body only: it is never logged, stored or put in an audit payload.
"""

import logging
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string

from .models import Invitation, Role

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    invitation_id: str
    message: EmailMultiAlternatives


def accept_url(token: str) -> str:
    """The link the invitee follows: INVITATION_ACCEPT_URL with the token appended."""
    return f"{settings.INVITATION_ACCEPT_URL}{token}"


def invitation_message(*, invitation: Invitation, token: str, inviter) -> EmailMultiAlternatives:
    """The invitation email (plain text with an HTML alternative) to `invitation.email`."""
    tenant = invitation.tenant
    membership = invitation.membership
    context = {
        "organization_name": tenant.name,
        "inviter_name": _person(inviter),
        "invitee_name": membership.user.name if membership.user_id else "",
        "role": Role(membership.role).label,
        "accept_url": accept_url(token),
        "expires_at": invitation.expires_at,
        "has_account": membership.user_id is not None,
    }
    subject = render_to_string("tenants/email/invitation_subject.txt", context)
    message = EmailMultiAlternatives(
        # One line: a name with a line break must not become an extra header.
        subject=" ".join(subject.split()),
        body=render_to_string("tenants/email/invitation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[invitation.email],
    )
    html = render_to_string("tenants/email/invitation.html", context)
    message.attach_alternative(html, "text/html")
    return message


def send_after_commit(*, invitation: Invitation, message: EmailMultiAlternatives) -> None:
    """Send `message` once the current transaction commits; a failure is logged, not raised
    (the invitation exists either way and can be sent again)."""
    transaction.on_commit(partial(_send, _Pending(str(invitation.pk), message)))


def _send(pending: _Pending) -> None:
    try:
        pending.message.send()
    except Exception:
        # The message is not logged: its body holds the token.
        logger.exception("The email for invitation %s could not be sent", pending.invitation_id)


def _person(user) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "An administrator"
    return user.name or user.email
