"""The billing app's Django admin: the plan catalogue (edited through billing.services, a
platform audit event each; a plan in use can only be deactivated), subscriptions (read-only,
with change-plan, cancel and resume actions through the services), invoices with their lines
inline (read-only, with void, mark-paid-offline, credit-note and resend actions), and the
payments, credit notes, checkout sessions and provider events (read-only records).

A model that services change is changed only through them: deletes through
`config.admin.ServiceDeleteAdmin.delete_through_service`, edits in a `save_model` that calls
the update service, actions looping with `config.admin.apply_each`; a record nobody edits by
hand is a `config.admin.ReadOnlyAdmin`. Each registered model is mapped to its service
modules in tests/test_admin_service_rules.py (`SERVICE_MODULES`).
"""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from config.admin import (
    ReadOnlyAdmin,
    ServiceActionsMixin,
    ServiceSaveAdmin,
    ShownInline,
    apply_each,
)

from . import services
from .catalogue import features_errors
from .models import (
    CheckoutSession,
    CreditNote,
    CreditNoteKind,
    Invoice,
    InvoiceLine,
    Payment,
    Plan,
    ProviderEvent,
    Subscription,
)


def _money(cents: int, currency: str) -> str:
    return f"{currency} {cents / 100:,.2f}"


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = services.PLAN_FIELDS

    def clean_features(self):
        features = self.cleaned_data["features"]
        problems = features_errors(features)
        if problems:
            raise forms.ValidationError(problems)
        return features


@admin.register(Plan)
class PlanAdmin(ServiceSaveAdmin):
    form = PlanForm
    create_service = staticmethod(services.plan_create)
    update_service = staticmethod(services.plan_update)
    delete_service = staticmethod(services.plan_delete)
    object_kwarg = "plan"
    list_display = ("name", "code", "price", "billing_interval", "tier", "trial_days", "active")
    list_filter = ("active", "billing_interval", "tier")
    search_fields = ("code", "name")
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="price", ordering="price_cents")
    def price(self, plan) -> str:
        return _money(plan.price_cents, plan.currency)


def _label(subscription) -> str:
    return subscription.tenant.slug


class ChangePlanForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.filter(active=True))


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = (
        "tenant",
        "plan",
        "status",
        "current_period_end",
        "cancel_at_period_end",
        "pending_plan",
    )
    list_select_related = ("tenant", "plan", "pending_plan")
    list_filter = ("status", "plan", "cancel_at_period_end")
    search_fields = ("tenant__name", "tenant__slug")
    actions = ("change_plan", "cancel_at_period_end", "cancel_now", "resume")

    @admin.action(description="Change the plan (upgrades now with proration, downgrades later)...")
    def change_plan(self, request, queryset):
        form = ChangePlanForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            plan = form.cleaned_data["plan"]
            done = apply_each(
                self,
                request,
                queryset.select_related("tenant"),
                lambda sub: services.subscription_change_plan(
                    tenant=sub.tenant, actor=request.user, plan=plan
                ),
                _label,
            )
            if done:
                self.message_user(request, f"{done} subscription(s) changed to {plan.name}.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "subscriptions": queryset.select_related("tenant", "plan"),
            "form": form,
        }
        return TemplateResponse(request, "admin/billing/subscription/change_plan.html", context)

    @admin.action(description="Cancel at the period end")
    def cancel_at_period_end(self, request, queryset):
        self._cancel(request, queryset, immediately=False)

    @admin.action(description="Cancel now (limits fall back to the Free plan's)")
    def cancel_now(self, request, queryset):
        self._cancel(request, queryset, immediately=True)

    def _cancel(self, request, queryset, *, immediately: bool) -> None:
        done = apply_each(
            self,
            request,
            queryset.select_related("tenant"),
            lambda sub: services.subscription_cancel(
                subscription=sub, actor=request.user, immediately=immediately
            ),
            _label,
        )
        self.message_user(request, f"{done} subscription(s) cancelled.", messages.SUCCESS)

    @admin.action(description="Resume (undo a cancellation at the period end)")
    def resume(self, request, queryset):
        done = apply_each(
            self,
            request,
            queryset.select_related("tenant"),
            lambda sub: services.subscription_resume(subscription=sub, actor=request.user),
            _label,
        )
        self.message_user(request, f"{done} subscription(s) resumed.", messages.SUCCESS)


class InvoiceLineInline(ShownInline):
    model = InvoiceLine
    fields = ("position", "type", "description", "quantity", "unit_amount_micros", "amount_cents")
    readonly_fields = fields


@admin.register(Invoice)
class InvoiceAdmin(ServiceActionsMixin, ReadOnlyAdmin):
    inlines = (InvoiceLineInline,)
    list_display = ("__str__", "tenant", "status", "reason", "total", "issued_at", "due_date")
    list_select_related = ("tenant",)
    list_filter = ("status", "reason")
    search_fields = ("number", "tenant__name", "tenant__slug")
    date_hierarchy = "issued_at"
    actions = ("void", "mark_paid_offline", "issue_credit_note", "resend")

    @admin.display(description="total", ordering="total_cents")
    def total(self, invoice) -> str:
        return _money(invoice.total_cents, invoice.currency)

    @admin.action(description="Void (unpaid invoices issued by mistake)")
    def void(self, request, queryset):
        self.each(
            request,
            queryset,
            lambda invoice: services.invoice_void(
                invoice=invoice, actor=request.user, reason="Voided by platform staff"
            ),
            "voided",
        )

    @admin.action(description="Mark paid offline (a bank transfer)...")
    def mark_paid_offline(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            OfflinePaymentForm,
            action="mark_paid_offline",
            title="Mark paid offline",
            change=lambda invoice, data: services.invoice_mark_paid_offline(
                invoice=invoice, actor=request.user, note=data["note"]
            ),
            done="marked paid",
        )

    @admin.action(description="Issue a credit note (refund or credit)...")
    def issue_credit_note(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            CreditNoteForm,
            action="issue_credit_note",
            title="Issue a credit note",
            change=lambda invoice, data: services.credit_note_issue(
                invoice=invoice, actor=request.user, **data
            ),
            done="credited",
        )

    @admin.action(description="Send again to the billing contacts")
    def resend(self, request, queryset):
        self.each(
            request,
            queryset,
            lambda invoice: services.invoice_resend(invoice=invoice, actor=request.user),
            "sent again",
        )


class OfflinePaymentForm(forms.Form):
    note = forms.CharField(max_length=500, help_text="The transfer's reference, and who saw it.")


class CreditNoteForm(forms.Form):
    amount_cents = forms.IntegerField(min_value=1, help_text="Per invoice, in cents.")
    kind = forms.ChoiceField(choices=CreditNoteKind.choices)
    reason = forms.CharField(max_length=500)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "tenant",
        "invoice",
        "amount",
        "status",
        "provider",
        "payment_method",
    )
    list_select_related = ("tenant", "invoice")
    list_filter = ("status", "provider")
    search_fields = ("invoice__number", "tenant__slug", "provider_payment_id")

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, payment) -> str:
        return _money(payment.amount_cents, payment.currency)


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = (
        "number",
        "tenant",
        "invoice",
        "kind",
        "amount",
        "remaining_cents",
        "created_at",
    )
    list_select_related = ("tenant", "invoice")
    list_filter = ("kind",)
    search_fields = ("number", "invoice__number", "tenant__slug")

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, note) -> str:
        return _money(note.amount_cents, note.currency)


@admin.register(CheckoutSession)
class CheckoutSessionAdmin(ReadOnlyAdmin):
    list_display = ("session_id", "tenant", "plan", "status", "expires_at", "completed_at")
    list_select_related = ("tenant", "plan")
    list_filter = ("status", "provider")
    search_fields = ("session_id", "tenant__slug")


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "provider", "type", "event_id", "organization_id", "outcome")
    list_filter = ("provider", "type")
    search_fields = ("event_id", "type", "organization_id")
