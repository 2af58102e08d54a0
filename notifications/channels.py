"""Delivery channels of notifications. In-app notifications are their rows; email goes through
Django's email backend (console in development, SMTP in production); SMS through the provider
SMS_PROVIDER names: `local` (the default) writes each message to the log, and an operator's
own provider is a dotted path to a class with `send(to: str, text: str)`.

A channel's failure is either for good (the message or its recipient refused, no confirmed
number) or one that may pass (`is_temporary`: the mail server or the provider could not be
reached, answered "try again later", or refused the platform's own account); the notification
is then sent again later.
"""

import logging
import smtplib
from functools import cache
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.utils.module_loading import import_string

from .models import Channel, Notification, NotificationPreference

logger = logging.getLogger(__name__)


class SMSProvider(Protocol):
    def send(self, to: str, text: str) -> None: ...


class ChannelUnavailable(Exception):
    """Raised by an SMS provider whose failure may pass (its service is down, it asked to be
    called later): the notification is sent again later. Any OSError (a refused connection, a
    timeout) counts the same."""


def is_temporary(error: Exception) -> bool:
    """Whether a channel's failure may pass, so its notification is tried again. Only a
    refusal of this message or its recipient is for good: an SMTP 5xx reply to the recipient or
    to the message, or any failure an SMS provider does not mark as passing (raising
    ChannelUnavailable or an OSError). The rest may pass: the server unreachable, silent or
    dropping the connection, a 4xx "try later", and a refusal of the platform's own account,
    sender or exchange (an SMTP login, a sender address or TLS the server will not take), which
    the operator's settings put right, and every notification waiting meanwhile then goes."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(
            _temporary_reply(code) for code, _ in error.recipients.values()
        )
    if isinstance(error, smtplib.SMTPDataError):
        return _temporary_reply(error.smtp_code)
    # smtplib's other errors are OSErrors: the connection's, the server's or the account's.
    return isinstance(error, ChannelUnavailable | OSError)


def _temporary_reply(code) -> bool:
    return isinstance(code, int) and 400 <= code < 500


class LocalSMSProvider:
    """The development provider: the message goes to the log, nowhere else."""

    def send(self, to: str, text: str) -> None:
        logger.info("SMS to %s: %s", to, text)


def sms_provider() -> SMSProvider:
    """The provider SMS_PROVIDER names (read at each call, so that a changed setting counts)."""
    return _provider(settings.SMS_PROVIDER)


@cache
def _provider(name: str) -> SMSProvider:
    return provider_class(name)()


def check_configured() -> None:
    """Stop the process (ImproperlyConfigured) if SMS_PROVIDER or EMAIL_BACKEND names no class:
    checked as the app starts, rather than failing every message later."""
    provider_class(settings.SMS_PROVIDER)
    try:
        import_string(settings.EMAIL_BACKEND)
    except ImportError as error:
        raise ImproperlyConfigured(f"EMAIL_BACKEND names no class: {error}") from None


def provider_class(name: str) -> type[SMSProvider]:
    """The class SMS_PROVIDER `name` names; ImproperlyConfigured when it names none (checked
    as the app starts: otherwise every SMS, phone confirmation codes included, failed)."""
    if name == "local":
        return LocalSMSProvider
    try:
        found = import_string(name)
    except ImportError as error:
        raise ImproperlyConfigured(f"SMS_PROVIDER names no class: {error}") from None
    if not isinstance(found, type) or not callable(getattr(found, "send", None)):
        raise ImproperlyConfigured(f"SMS_PROVIDER {name!r} is not a class with a send() method.")
    return found


def send(notification: Notification) -> None:
    """Send one email or SMS notification; raises when its channel fails."""
    if notification.channel == Channel.EMAIL:
        send_mail(
            subject=notification.title,
            message=notification.message,
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[notification.recipient.email],
            fail_silently=False,
        )
    elif notification.channel == Channel.SMS:
        phone = (
            NotificationPreference.objects.filter(
                tenant_id=notification.tenant_id,
                user_id=notification.recipient_id,
                phone_confirmed_at__isnull=False,  # cleared when the number changes
            )
            .values_list("phone_number", flat=True)
            .first()
        )
        if not phone:  # the number may have changed since the notification was created
            raise ValueError("the recipient has no confirmed phone number")
        sms_provider().send(phone, f"{notification.title}: {notification.message}"[:480])
