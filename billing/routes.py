"""The (prefix, viewset, basename) triples this app registers on the one API router.

config/urls.py, the composition root, registers them under /api/v1/: `billing/plans`, the
organization's `billing/subscription` (actions of SubscriptionViewSet under `billing/`) and
`billing/invoices`, and the provider's `billing/webhooks/<provider>`. The local provider's
hosted checkout page is no API route: config/urls.py maps `/billing/checkout/<session_id>` to
views.CheckoutPage. Every routed action needs a permission (tests/api walks them all), and
each tenant-owned resource joins the battery in tests/billing/test_api.py.
"""

from .views import (
    CreditNoteViewSet,
    InvoiceViewSet,
    PlanViewSet,
    ProviderWebhookViewSet,
    SubscriptionViewSet,
)

routes = [
    ("billing/plans", PlanViewSet, "plan"),
    ("billing/invoices", InvoiceViewSet, "invoice"),
    ("billing/credit-notes", CreditNoteViewSet, "credit-note"),
    # The provider's name is part of the path: billing/webhooks/local, billing/webhooks/stripe.
    ("billing/webhooks/(?P<provider>[a-z0-9_-]{1,32})", ProviderWebhookViewSet, "provider-webhook"),
    ("billing", SubscriptionViewSet, "billing"),
]
