"""Invitation emails: built from templates inside the service's transaction, sent after it
commits (so no email announces an invitation that was rolled back).

The token is in the message body only: it is never logged, stored or put in an audit payload.
"""

import logging
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string

from .models import Invitation, Role

logger = logging.getLogger(__name__)


@dataclass
class InvitationEmail:
    """An invitation's email, sent once its transaction commits: `sent` is None until then,
    and then whether the mail server took it. The inviting request's answer says which (the
    service's own transaction has committed by the time its view answers)."""

    invitation_id: str
    message: EmailMultiAlternatives = field(repr=False)  # its body holds the token
    sent: bool | None = None


# The control plane's own accept page (config/urls.py), the token appended.
ACCEPT_PATH = "/invitations/accept?token="
# The link's base when neither a setting nor a request names one (a management command, a
# Celery task): the quick start's address. Deployments set PUBLIC_BASE_URL.
FALLBACK_LINK_BASE = "http://localhost:8000"


def request_link_base(request) -> str:
    """The scheme, host and port `request` came in on, e.g. `http://127.0.0.1:8011`."""
    # get_host() has checked the Host header against ALLOWED_HOSTS, so a forged host never
    # makes a link; behind a proxy the scheme follows SECURE_PROXY_SSL_HEADER.
    return request.build_absolute_uri("/").rstrip("/")


def accept_url(token: str, *, link_base: str | None = None) -> str:
    """The link the invitee follows: INVITATION_ACCEPT_URL + token when set, else the accept
    page on PUBLIC_BASE_URL, `link_base` (the inviting request's) or FALLBACK_LINK_BASE."""
    if settings.INVITATION_ACCEPT_URL:
        return f"{settings.INVITATION_ACCEPT_URL}{token}"
    base = settings.PUBLIC_BASE_URL or link_base or FALLBACK_LINK_BASE
    return f"{base.rstrip('/')}{ACCEPT_PATH}{token}"


def invitation_message(
    *, invitation: Invitation, token: str, inviter, link_base: str | None = None
) -> EmailMultiAlternatives:
    """The invitation email (plain text with an HTML alternative) to `invitation.email`."""
    tenant = invitation.tenant
    membership = invitation.membership
    context = {
        "organization_name": tenant.name,
        "inviter_name": _person(inviter),
        "invitee_name": membership.user.name if membership.user_id else "",
        "role": Role(membership.role).label,
        "accept_url": accept_url(token, link_base=link_base),
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


def send_after_commit(
    *, invitation: Invitation, message: EmailMultiAlternatives
) -> InvitationEmail:
    """Send `message` once the current transaction commits; a failure is logged, not raised
    (the invitation exists either way and can be sent again), and kept in the returned
    InvitationEmail's `sent`."""
    email = InvitationEmail(str(invitation.pk), message)
    transaction.on_commit(partial(_send, email))
    return email


def _send(email: InvitationEmail) -> None:
    try:
        email.message.send()
    except Exception:
        email.sent = False
        # The message is not logged: its body holds the token.
        logger.exception("The email for invitation %s could not be sent", email.invitation_id)
    else:
        email.sent = True


def _person(user) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "An administrator"
    return user.name or user.email
