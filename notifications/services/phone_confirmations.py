"""Confirming a member's phone number before any SMS goes to it.

A member types in their own number; without a confirmation, an organization could have the
platform send SMS to any number at the operator's cost. So a number receives one kind of SMS
before it is confirmed: a six-digit code, sent on its member's request
(`phone_confirmation_send`), which they enter (`phone_confirmation_confirm`). Changing the
number clears its confirmation (notification_preferences_update).

The code messages are bounded too, since they go to unconfirmed numbers: one a minute and
PHONE_CONFIRMATION_CODES_PER_DAY per member of an organization, and
PHONE_CONFIRMATION_CODES_PER_NUMBER_PER_DAY to one number from the whole platform (its
digits, so that spacing cannot pass it). The text is fixed: nothing an organization or a
member typed goes into it.
"""

import logging
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework.exceptions import ValidationError

from audit.services import record
from config.db import advisory_xact_lock
from config.exceptions import Conflict, RateLimitExceeded, ServiceUnavailable
from tenants.models import Tenant

from .. import channels
from ..models import NotificationPreference, PhoneConfirmation

logger = logging.getLogger(__name__)

PHONE_CONFIRMATION_TTL = timedelta(minutes=10)
PHONE_CONFIRMATION_INTERVAL = timedelta(minutes=1)
PHONE_CONFIRMATION_ATTEMPTS = 5
_DAY = timedelta(days=1)
_CODE_DIGITS = 6


def _number_key(phone_number: str) -> str:
    """A number's digits: what its confirmations are counted by across the platform."""
    return re.sub(r"\D", "", phone_number)


def _code_hash(confirmation: PhoneConfirmation, code: str) -> str:
    return salted_hmac(
        "notifications.phone_confirmation", f"{confirmation.pk}:{code}", algorithm="sha256"
    ).hexdigest()


def _locked_preference(tenant: Tenant, user) -> NotificationPreference | None:
    return (
        NotificationPreference.objects.select_for_update().filter(tenant=tenant, user=user).first()
    )


def _number_to_confirm(preference: NotificationPreference | None) -> str:
    if preference is None or not preference.phone_number:
        raise ValidationError(
            {"phone_number": ["Set a phone number in your notification preferences first."]}
        )
    if preference.phone_confirmed:
        raise Conflict("This phone number is already confirmed.")
    return preference.phone_number


def _check_codes_allowed(*, tenant: Tenant, user, number_key: str, now) -> None:
    """Raise RateLimitExceeded when one more code would pass the interval or a daily bound.
    Called under the member's preference row lock and the number's lock."""
    since = now - _DAY
    mine = list(
        PhoneConfirmation.objects.filter(tenant=tenant, user=user, created_at__gt=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
    )
    if mine and mine[0] > now - PHONE_CONFIRMATION_INTERVAL:
        raise RateLimitExceeded(
            "A code was sent less than a minute ago; wait before asking for another.",
            wait=(mine[0] + PHONE_CONFIRMATION_INTERVAL - now).total_seconds(),
        )
    limit = settings.PHONE_CONFIRMATION_CODES_PER_DAY
    if len(mine) >= limit:
        raise RateLimitExceeded(
            f"{len(mine)} codes were sent to you in the last 24 hours; at most {limit} a day.",
            wait=(mine[limit - 1] + _DAY - now).total_seconds(),
            details={"codes_sent": len(mine), "limit": limit},
        )
    per_number = settings.PHONE_CONFIRMATION_CODES_PER_NUMBER_PER_DAY
    to_number = list(
        PhoneConfirmation.objects.filter(number_key=number_key, created_at__gt=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:per_number]
    )
    if len(to_number) >= per_number:
        raise RateLimitExceeded(
            f"This number was sent {per_number} codes in the last 24 hours; try again later.",
            wait=(to_number[-1] + _DAY - now).total_seconds(),
            details={"limit": per_number},
        )


@transaction.atomic
def phone_confirmation_send(*, tenant: Tenant, user, actor) -> PhoneConfirmation:
    """Send a new code to the member's phone number. The code is in the SMS only; a code sent
    earlier stops working. When the SMS provider fails, nothing is kept (the code does not
    count) and the answer is 503."""
    preference = _locked_preference(tenant, user)
    phone_number = _number_to_confirm(preference)
    # Two members' requests for one number must not pass its bound together.
    key = _number_key(phone_number)
    advisory_xact_lock(f"notifications:phone:{key}")
    now = timezone.now()
    _check_codes_allowed(tenant=tenant, user=user, number_key=key, now=now)

    code = f"{secrets.randbelow(10**_CODE_DIGITS):0{_CODE_DIGITS}d}"
    confirmation = PhoneConfirmation(
        tenant=tenant,
        user=user,
        phone_number=phone_number,
        number_key=key,
        expires_at=now + PHONE_CONFIRMATION_TTL,
    )
    confirmation.code_hash = _code_hash(confirmation, code)
    confirmation.save()
    # Neither the number nor the code: the audit log keeps what happened, not secrets.
    record(
        tenant=tenant,
        event_type="notification.phone_confirmation_sent",
        actor=actor,
        payload={"user_id": str(user.pk)},
    )
    minutes = int(PHONE_CONFIRMATION_TTL.total_seconds() // 60)
    try:
        channels.sms_provider().send(
            phone_number,
            f"Your confirmation code is {code}. It expires in {minutes} minutes. "
            "If you did not ask for it, ignore this message.",
        )
    except Exception as error:
        logger.warning("phone confirmation code not sent: %s", type(error).__name__)
        raise ServiceUnavailable(
            "The SMS provider could not send the code; try again later."
        ) from None
    return confirmation


def phone_confirmation_confirm(*, tenant: Tenant, user, actor, code: str):
    """Confirm the member's number with the last code sent to it. A wrong code uses one of
    its PHONE_CONFIRMATION_ATTEMPTS tries, and that is kept although the answer is an error:
    the try and the refusal are two steps, the first committed."""
    preference, refusal = _try_code(tenant=tenant, user=user, actor=actor, code=code)
    if refusal:
        raise ValidationError({"code": [refusal]})
    return preference


@transaction.atomic
def _try_code(*, tenant: Tenant, user, actor, code: str):
    preference = _locked_preference(tenant, user)
    phone_number = _number_to_confirm(preference)
    confirmation = (
        PhoneConfirmation.objects.select_for_update()
        .filter(tenant=tenant, user=user)
        .order_by("-created_at")
        .first()
    )
    if (
        confirmation is None
        or confirmation.confirmed_at is not None
        or confirmation.phone_number != phone_number
    ):
        return None, "No code was sent to this number; ask for one."
    now = timezone.now()
    if confirmation.expires_at <= now:
        return None, "The code expired; ask for a new one."
    if confirmation.attempts >= PHONE_CONFIRMATION_ATTEMPTS:
        return None, "Too many wrong codes; ask for a new one."
    if not constant_time_compare(_code_hash(confirmation, code), confirmation.code_hash):
        PhoneConfirmation.objects.filter(pk=confirmation.pk).update(
            attempts=F("attempts") + 1, updated_at=now
        )
        left = PHONE_CONFIRMATION_ATTEMPTS - confirmation.attempts - 1
        if left:
            return None, f"The code is wrong; {left} tries left."
        return None, "The code is wrong; ask for a new one."
    PhoneConfirmation.objects.filter(pk=confirmation.pk).update(confirmed_at=now, updated_at=now)
    NotificationPreference.objects.filter(pk=preference.pk).update(
        phone_confirmed_at=now, updated_at=now
    )
    preference.phone_confirmed_at = now
    record(
        tenant=tenant,
        event_type="notification.phone_confirmed",
        actor=actor,
        payload={"user_id": str(user.pk)},
    )
    return preference, None


def phone_confirmations_prune() -> int:
    """Delete the codes older than a day (beat, hourly): they count toward no bound any more,
    and their rows hold phone numbers. Returns how many went."""
    deleted, _ = PhoneConfirmation.objects.filter(created_at__lte=timezone.now() - _DAY).delete()
    return deleted
