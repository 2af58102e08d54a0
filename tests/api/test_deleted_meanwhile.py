"""Every write on one object, when another request deletes the object between this request's
read of it (the view's `get_object`) and its write: the answer is a 404 (or the refusal the
request would have had anyway), never a 500, and the object stays deleted.

Two clients deleting, updating or acting on one object at once do exactly this: the view reads
the object, the other request's deletion commits, and the service locks or saves a row that is
gone. The test makes the interleaving certain by deleting the row as the view's read returns.
"""

import pytest
from django.db.models.deletion import Collector
from django.http import Http404

from config.db import DeletedMeanwhile, locked_or_404
from tenants.models import Role, Tenant
from tests.conftest import assert_envelope
from tests.factories import TenantFactory

from .endpoints import ENDPOINTS

pytestmark = pytest.mark.django_db

# Valid bodies for the actions whose empty body is refused before the service runs (PUT is the
# same service as PATCH, which an empty body reaches).
BODIES = {
    ("TenantViewSet", "suspend"): {"reason": "Unpaid"},
    ("PromptTemplateViewSet", "execute"): {"variables": {}},
    ("PromptTemplateViewSet", "publish"): {"version": 1},
    ("PromptExecutionViewSet", "rating"): {"rating": 5},
    ("TicketViewSet", "comments"): {"comment": "Looking into it."},
    ("AiAgentViewSet", "assertions"): {"correct": True, "latency_ms": 120},
    ("BudgetViewSet", "usage_records"): {"amount_cents": 100},
    ("RefundViewSet", "reject"): {"rejection_reason": "Outside the refund window."},
    ("WebhookEndpointViewSet", "replay"): {"since": "2026-01-01T00:00:00Z"},
}

# Their empty body is refused before the view reads the object's state (a file, a payment
# method, a representative to name), and a valid one needs more objects than the test makes.
REFUSED_BEFORE_THE_SERVICE = {
    ("InvoiceViewSet", "pay"),
    ("TicketViewSet", "assign"),
    ("TicketViewSet", "attachments"),
}
# Idempotent: with the object gone the outcome is the one asked for (deleted), and the answer
# says so.
SAME_OUTCOME_WITHOUT_IT = {
    ("ArtifactViewSet", "destroy"),
    ("AttachmentViewSet", "destroy"),
}

WRITES = [
    endpoint
    for endpoint in ENDPOINTS
    if endpoint.is_detail and endpoint.method in ("put", "patch", "delete", "post")
    if endpoint.model is not None
]


def _deleting_as_read(view_class, monkeypatch) -> list:
    """Make the view's get_object delete the row it returns; the list collects what it read."""
    read = []
    original = view_class.get_object

    def get_object(self):
        obj = original(self)
        type(obj).objects.filter(pk=obj.pk).delete()
        read.append(obj)
        return obj

    monkeypatch.setattr(view_class, "get_object", get_object)
    return read


@pytest.mark.parametrize("endpoint", WRITES, ids=str)
def test_a_write_on_an_object_deleted_meanwhile_is_a_404(endpoint, make_caller, monkeypatch):
    # An owner who is also staff: every permission, and the platform's staff actions.
    caller = make_caller(Role.OWNER, is_staff=True, is_superuser=True)
    if endpoint.model is Tenant:
        obj = TenantFactory()
    else:
        obj = endpoint.make(caller.tenant, owner=caller.user)
    lookup = getattr(obj, endpoint.view_class.lookup_field or "pk")
    # Deletable, or the deletion inside the view would fail for the test's own reason (a
    # PROTECT reference): said here, plainly, rather than as the view's 500.
    Collector(using=obj._state.db).collect([obj])
    read = _deleting_as_read(endpoint.view_class, monkeypatch)

    body = BODIES.get((endpoint.view_class.__name__, endpoint.action), {})
    response = getattr(caller.client, endpoint.method)(
        endpoint.url(str(lookup)), body, format="json"
    )

    assert response.status_code < 500, (response.status_code, response.content[:500])
    if read:
        assert not type(obj).objects.filter(pk=obj.pk).exists(), "the write brought it back"
        action = (endpoint.view_class.__name__, endpoint.action)
        if endpoint.method == "put" or action in REFUSED_BEFORE_THE_SERVICE:
            return
        if action in SAME_OUTCOME_WITHOUT_IT:
            assert response.status_code in (200, 204), response.content[:300]
            return
        # The object's absence is the answer (or a refusal its kind has anyway, as drawing a
        # refund budget by hand is), never a made-up validation error.
        assert response.status_code in (404, 409), response.content[:300]
        if response.status_code == 404:
            assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_the_error_of_a_row_gone_under_the_lock_is_a_404_and_the_models_does_not_exist():
    """Views answer it 404; code that catches the model's DoesNotExist (a task, a command)
    still does."""
    gone = TenantFactory()
    Tenant.objects.filter(pk=gone.pk).delete()

    with pytest.raises(Tenant.DoesNotExist) as raised:
        locked_or_404(Tenant.objects, pk=gone.pk)
    assert isinstance(raised.value, Http404)
    assert isinstance(raised.value, DeletedMeanwhile)
    with pytest.raises(Http404):
        Tenant.objects.locked(gone.pk)
    assert locked_or_404(Tenant.objects, pk=TenantFactory().pk) is not None
