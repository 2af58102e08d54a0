"""`Idempotency-Key` for the POST actions that move money (payments, refunds, plan changes),
with Stripe's semantics: a client that retries a request it never saw the answer to gets the
first answer again, and the effect happens once.

    class InvoiceViewSet(TenantScopedViewSet):
        @action(detail=True, methods=["post"])
        @idempotent
        def pay(self, request, pk=None):
            ...

The rules, for a request carrying the header (without it the action just runs):

- **Scope.** A key belongs to the request's tenant and caller: `user:<uuid>` for a token, JWT
  or session, `api_key:<uuid>` for an API key. The same key sent by another user, another key
  or in another tenant is another key. The key is 1 to 255 characters without control
  characters; anything else is `400 VALIDATION_ERROR`.
- **What is stored** (tenants.models.IdempotencyKey): the key, its scope, a fingerprint of the
  request (SHA-256 of the method, the path without its trailing slash, and the body as RFC 8785
  canonical JSON, so whitespace and key order do not matter; query parameters are not part of
  it) and, once the action has answered, the answer's status and JSON body. Headers are not
  stored.
- **Same key, same request, answered:** the stored answer is replayed with
  `Idempotent-Replayed: true`, and the action does not run. The replay still passes
  authentication, permissions, throttles and the api_calls quota like any request; a replayed
  error envelope carries the replaying request's own `request_id`.
- **Same key, another request** (method, path or body): `422 IDEMPOTENCY_KEY_REUSED`.
- **Same key while the first request still runs:** `409 CONFLICT`; retry later.
- **Which answers are stored:** every answer below 500 but 429, errors included: a `400` or `404`
  raised by the action (an ApplicationError or another APIException, turned into the envelope
  by the view's exception handler, config.exceptions) is replayed as it was, as Stripe does.
  A 5xx answer or an unexpected exception rolls back what the action wrote and releases the
  key (its row is deleted), so a retry runs the action again. So does a `429` the action
  answers (a quota it consumes): it tells the client to retry later, which a stored 429 would
  refuse for as long as the key lives. (Throttles and the api_calls quota refuse a request
  before the action runs, and so before the key is looked at.)
- **The claim and its lease.** The first request claims the key by an INSERT committed at once,
  in its own short transaction, so concurrent requests with the key see it (the unique
  constraint lets one INSERT win). The claim holds a lease of IDEMPOTENCY_KEY_LEASE_SECONDS: a
  claim whose request died (a killed worker) is taken over by the next request with the key,
  once the lease has passed, by a conditional UPDATE that only one request can win. Each holder
  has its own lease token; a request that outlived its lease and was taken over cannot store its
  answer (the token no longer matches), so its writes roll back and it answers 409.
- **Why the action and the stored answer commit together.** The action runs in one
  `transaction.atomic()` that ends by storing its answer on the claim: either both commit or
  neither does. Were the answer stored afterwards, a crash in between would leave an effect
  with a running claim, and the retry that takes the claim over would repeat the effect.
  Because the decorator needs this transaction and the committed claim to be outermost, it
  refuses to run inside another transaction (`durable=True`; ATOMIC_REQUESTS stays off).
- **Effects outside the database.** The transaction covers the database only. An action that
  calls out (a payment provider charge) must pass on, as the provider's own idempotency key,
  `provider_idempotency_key(request, purpose)`: the same for every retry of the request, and
  distinct across tenants and callers (who share the platform's one provider account). If this
  process dies after the charge but before the commit, or the provider's answer is lost, the
  retry charges again, and only the provider's deduplication turns that into a replay.
- **Expiry.** A key is kept IDEMPOTENCY_KEY_TTL_HOURS (default 24) from its first use; after
  that it counts as never sent, even before the hourly beat task
  (tenants.tasks.prune_idempotency_keys) deletes it.
"""

import functools
import hashlib
import uuid
from datetime import timedelta

import rfc8785
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.http import QueryDict
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.utils import json

from config import request_context
from config.exceptions import (
    ApplicationError,
    Conflict,
    IdempotencyKeyReused,
    TenantRequired,
    is_api_error,
)
from config.renderers import JSONRenderer

from .models import IdempotencyKey, IdempotencyKeyState
from .permissions import is_tenant_bound_credential

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
IN_PROGRESS_MESSAGE = (
    "A request with this Idempotency-Key is in progress; retry after it has finished."
)
LEASE_LOST_MESSAGE = (
    "This request took longer than its Idempotency-Key lease and another request with the key "
    "took over; nothing was changed by this one."
)
# Rounds of insert / read / take over before giving up with 409: each lost round means another
# request with the key changed its row meanwhile.
_CLAIM_ROUNDS = 3
_FILE_CHUNK = 64 * 1024


def idempotency_key(request) -> str | None:
    """The request's Idempotency-Key (None without one); 400 when it is malformed."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    problem = None
    if not key:
        problem = "The key is empty."
    elif len(key) > MAX_KEY_LENGTH:
        problem = f"The key is longer than {MAX_KEY_LENGTH} characters."
    elif any(ord(character) < 0x20 or ord(character) == 0x7F for character in key):
        problem = "The key may not contain control characters."
    if problem:
        raise ApplicationError(f"Invalid {HEADER} header.", details={HEADER: [problem]})
    return key


def caller_of(request) -> str:
    """Who sends the key within the tenant: the API key, else the user."""
    if is_tenant_bound_credential(request):
        return f"api_key:{request.auth.pk}"
    user = request.user
    if not (user and user.is_authenticated):
        raise ApplicationError(
            f"An {HEADER} needs an authenticated caller.",
            details={HEADER: ["Send it with your credentials."]},
        )
    return f"user:{user.pk}"


def provider_idempotency_key(request, purpose: str = "") -> str | None:
    """The idempotency key to give an outside service (a payment provider) for this request's
    effect `purpose` ("charge", "refund"): every retry of the request gets the same one, another
    tenant, caller, key or purpose another. None when the request carries no Idempotency-Key."""
    key = idempotency_key(request)
    if key is None:
        return None
    material = "\n".join((str(request.tenant.pk), caller_of(request), key, purpose))
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def request_fingerprint(request) -> str:
    """SHA-256 (hex) of the method, the path without its trailing slash and the canonical body."""
    path = request.path.rstrip("/") or "/"
    digest = hashlib.sha256()
    digest.update(request.method.upper().encode("utf-8", "surrogatepass"))
    digest.update(b"\n")
    digest.update(path.encode("utf-8", "surrogatepass"))
    digest.update(b"\n")
    digest.update(canonical_body(request.data))
    return digest.hexdigest()


def canonical_body(data) -> bytes:
    """The parsed body as RFC 8785 JSON. A body RFC 8785 cannot express (an integer beyond
    +-2**53) is written with sorted keys and no spaces instead, behind a marker byte no RFC 8785
    document starts with: the same body always takes the same way, so it matches itself."""
    plain = _plain(data)
    try:
        return rfc8785.dumps(plain)
    except rfc8785.CanonicalizationError:
        fallback = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str)
        return b"~" + fallback.encode("ascii")


def _plain(value):
    """Form and multipart bodies as JSON values: a field is the list of its values, a file its
    name, size and SHA-256."""
    if isinstance(value, QueryDict):
        return {str(key): [_plain(item) for item in value.getlist(key)] for key in value}
    if isinstance(value, UploadedFile):
        return {"file": value.name, "size": value.size, "sha256": _file_digest(value)}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _file_digest(uploaded: UploadedFile) -> str:
    digest = hashlib.sha256()
    uploaded.seek(0)
    for chunk in uploaded.chunks(_FILE_CHUNK):
        digest.update(chunk)
    uploaded.seek(0)
    return digest.hexdigest()


def idempotent(action):
    """Give a DRF POST action `Idempotency-Key` semantics (see the module docstring). Put it
    below `@action(...)`, so that it wraps the plain method."""

    @functools.wraps(action)
    def wrapper(view, request, *args, **kwargs):
        key = idempotency_key(request)
        if key is None:
            return action(view, request, *args, **kwargs)
        tenant = getattr(request, "tenant", None)
        if tenant is None:
            raise TenantRequired(f"An {HEADER} is kept per organization: name the organization.")
        claimed = _claim(
            tenant=tenant,
            caller=caller_of(request),
            key=key,
            fingerprint=request_fingerprint(request),
        )
        if isinstance(claimed, Response):
            return claimed
        return _run(view, request, action, args, kwargs, claimed)

    wrapper.idempotent = True
    return wrapper


def is_idempotent(handler) -> bool:
    """Whether a view's action method honours Idempotency-Key (for the schema and tests)."""
    return bool(getattr(handler, "idempotent", False))


# The claim ------------------------------------------------------------------------------------


def _lease_end(now):
    return now + timedelta(seconds=settings.IDEMPOTENCY_KEY_LEASE_SECONDS)


def _claim(*, tenant, caller: str, key: str, fingerprint: str) -> IdempotencyKey | Response:
    """This request's claim on the key (its row, holding this request's lease token), or the
    answer to give instead: the stored one replayed; 422 and 409 are raised."""
    for _ in range(_CLAIM_ROUNDS):
        now = timezone.now()
        token = uuid.uuid4()
        try:
            # Committed at once: concurrent requests with the key must see the claim.
            with transaction.atomic(durable=True):
                return IdempotencyKey.objects.create(
                    tenant=tenant,
                    caller=caller,
                    key=key,
                    fingerprint=fingerprint,
                    locked_until=_lease_end(now),
                    lease_token=token,
                )
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(tenant=tenant, caller=caller, key=key).first()
        if existing is None:
            continue  # released (a 5xx) or pruned meanwhile: claim it afresh
        if existing.is_expired(now):
            # An expired key counts as never sent. Only this (expired) row is deleted: one
            # claimed afresh meanwhile is not.
            IdempotencyKey.objects.filter(pk=existing.pk).expired(now=now).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        if existing.state == IdempotencyKeyState.COMPLETED:
            return _replay(existing)
        if existing.locked_until is not None and existing.locked_until > now:
            raise Conflict(IN_PROGRESS_MESSAGE)
        # The lease has passed: the request holding it died. One UPDATE takes it over; of
        # several retries, only the one that still finds the lease it read wins.
        taken = IdempotencyKey.objects.filter(
            pk=existing.pk,
            state=IdempotencyKeyState.RUNNING,
            lease_token=existing.lease_token,
        ).update(locked_until=_lease_end(now), lease_token=token, updated_at=now)
        if taken:
            existing.locked_until = _lease_end(now)
            existing.lease_token = token
            return existing
    raise Conflict(IN_PROGRESS_MESSAGE)


def _replay(stored: IdempotencyKey) -> Response:
    body = stored.response_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        # The envelope's request_id is always this answer's X-Request-ID.
        body = {"error": {**body["error"], "request_id": request_context.current().request_id}}
    return Response(body, status=stored.response_status, headers={REPLAYED_HEADER: "true"})


# Running the action ---------------------------------------------------------------------------


def _retryable(response) -> bool:
    """An answer that says "try again" (5xx, 429): never stored, the key is released."""
    return response.status_code >= 500 or response.status_code == 429


class _NotStored(Exception):
    """A retryable answer: the action's writes roll back and the key is released."""

    def __init__(self, response):
        super().__init__(response.status_code)
        self.response = response


class _LeaseLost(Exception):
    """The claim was taken over while this request ran (it outlived its lease)."""


def _run(view, request, action, args, kwargs, claim: IdempotencyKey):
    try:
        # The action's writes and its stored answer commit together, or neither does.
        with transaction.atomic(durable=True):
            response = action(view, request, *args, **kwargs)
            if not isinstance(response, Response):
                raise TypeError(
                    f"@idempotent {action.__qualname__} answered a {type(response).__name__}; "
                    "it must answer a rest_framework Response, whose JSON can be stored."
                )
            if _retryable(response):
                raise _NotStored(response)
            _store(claim, response)
        return response
    except _NotStored as not_stored:
        _release(claim)
        return not_stored.response
    except _LeaseLost:
        return view.handle_exception(Conflict(LEASE_LOST_MESSAGE))
    except Exception as exc:
        if not is_api_error(exc):
            _release(claim)
            raise
        # An error the action raised (its writes rolled back above): answered as the view
        # answers it, and stored unless it is retryable.
        response = view.handle_exception(exc)
        if _retryable(response):
            _release(claim)
            return response
        try:
            with transaction.atomic(durable=True):
                _store(claim, response)
        except _LeaseLost:
            return view.handle_exception(Conflict(LEASE_LOST_MESSAGE))
        return response


def _store(claim: IdempotencyKey, response: Response) -> None:
    """The answer on the claim, if this request still holds it (else _LeaseLost)."""
    stored = IdempotencyKey.objects.filter(
        pk=claim.pk, state=IdempotencyKeyState.RUNNING, lease_token=claim.lease_token
    ).update(
        state=IdempotencyKeyState.COMPLETED,
        response_status=response.status_code,
        response_body=_json_body(response),
        locked_until=None,
        updated_at=timezone.now(),
    )
    if not stored:
        raise _LeaseLost()


def _json_body(response: Response):
    """The body as the client receives it (the API's renderer), as a JSON value."""
    if response.data is None:
        return None
    return json.loads(JSONRenderer().render(response.data))


def _release(claim: IdempotencyKey) -> None:
    """Forget the claim, so a retry runs the action; only while this request holds it."""
    IdempotencyKey.objects.filter(
        pk=claim.pk, state=IdempotencyKeyState.RUNNING, lease_token=claim.lease_token
    ).delete()
