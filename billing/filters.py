"""FilterSets of the billing app (django-filter), each named by a viewset's
`filterset_class`.

The queryset a FilterSet narrows is already the request tenant's, but a filter choosing among
other objects (`ModelChoiceFilter`) builds its own: it takes
`queryset=tenants.serializers.fields.tenant_queryset(Model)`, so no other tenant's row is
listed or matched. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`.
"""

import django_filters

from config.filters import UTCDateTimeFilter

from .models import CreditNote, CreditNoteKind, Invoice, InvoiceStatus

_ISSUED = [choice for choice in InvoiceStatus.choices if choice[0] != InvoiceStatus.DRAFT]


class InvoiceFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=_ISSUED)
    issued_after = UTCDateTimeFilter(field_name="issued_at", lookup_expr="gte")
    issued_before = UTCDateTimeFilter(field_name="issued_at", lookup_expr="lt")

    class Meta:
        model = Invoice
        fields = ["status", "reason"]


class CreditNoteFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=CreditNoteKind.choices)
    invoice = django_filters.UUIDFilter(field_name="invoice_id")

    class Meta:
        model = CreditNote
        fields = ["kind"]
