"""Seed the plan catalogue (billing.catalogue) and put every existing tenant on the plan of its
tier, active, in the current calendar month: the tier and its limits stay what they were
(billing.catalogue.PLAN_OF_TIER), and the plan's features are copied onto the tenant as every
plan change does."""

from datetime import UTC, datetime

from django.conf import settings
from django.db import migrations


def seed(apps, schema_editor):
    from billing.catalogue import PLAN_OF_TIER, seed_plans
    from billing.periods import add_months

    Plan = apps.get_model("billing", "Plan")
    Subscription = apps.get_model("billing", "Subscription")
    Tenant = apps.get_model("tenants", "Tenant")
    seed_plans(Plan, settings.BILLING_CURRENCY)
    plans = {plan.code: plan for plan in Plan.objects.all()}
    now = datetime.now(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = add_months(start, 1)
    subscribed = set(Subscription.objects.values_list("tenant_id", flat=True))
    for tenant in Tenant.objects.exclude(pk__in=subscribed).iterator():
        plan = plans[PLAN_OF_TIER.get(tenant.plan, "free")]
        Subscription.objects.create(
            tenant=tenant,
            plan=plan,
            status="active",
            current_period_start=start,
            current_period_end=end,
        )
        Tenant.objects.filter(pk=tenant.pk).update(plan_features=plan.features)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial"), ("tenants", "0005_plan_features")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
