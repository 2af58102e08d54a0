"""Demo data for the quick start: idempotent, prints the credentials it set."""

from importlib import import_module

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.module_loading import module_has_submodule

from accounts.models import User
from accounts.services import user_create
from tenants.models import Membership, Role, Tenant, TenantStatus
from tenants.services import membership_add, tenant_create, theme_update
from tenants.services.lifecycle import tenant_activate

DEMO_PASSWORD = "demo-password-123"
STAFF_EMAIL = "admin@example.com"
DEMO_TENANTS = [
    ("acme", "Acme Corporation", "pro", {"primary_color": "#059669", "name": "Acme green"}),
    ("globex", "Globex Inc.", "enterprise", {"primary_color": "#7c3aed", "name": "Globex violet"}),
]
DEMO_ROLES = (Role.OWNER, Role.ADMIN, Role.VIEWER, Role.DPO)


class Command(BaseCommand):
    help = (
        "Load demo data: a staff superuser and two tenants with an owner, admin, viewer and "
        "data protection officer each."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Allow running with DEBUG off (never in production).",
        )

    def _user(self, email: str, name: str, *, superuser: bool = False) -> User:
        user = User.objects.filter(email=email).first()
        if user is None:
            return user_create(
                email=email, password=DEMO_PASSWORD, name=name, is_superuser=superuser
            )
        if not user.check_password(DEMO_PASSWORD):
            # The printed credentials must work, even after someone changed a demo password.
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        return user

    @transaction.atomic
    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError("Refusing to load demo data with DEBUG off; pass --force to insist.")
        staff = self._user(STAFF_EMAIL, "Platform Admin", superuser=True)
        rows = [("staff (admin site)", STAFF_EMAIL, "-")]
        for slug, name, plan, theme in DEMO_TENANTS:
            owner = self._user(f"owner@{slug}.example.com", f"{name} Owner")
            tenant = Tenant.objects.filter(slug=slug).first() or tenant_create(
                actor=staff, owner=owner, name=name, slug=slug, plan=plan
            )
            if tenant.status == TenantStatus.TRIAL:
                tenant = tenant_activate(tenant=tenant, actor=staff)
            theme_update(tenant=tenant, actor=staff, data=theme)
            for role in DEMO_ROLES:
                user = self._user(f"{role}@{slug}.example.com", f"{name} {role.label}")
                if not Membership.objects.filter(tenant=tenant, user=user).exists():
                    membership_add(tenant=tenant, user=user, role=role, actor=staff)
                rows.append((f"{role} of {slug}", user.email, str(tenant.pk)))

        # Each domain app may add its own demo data in a `demo` module (`load(stdout=, staff=)`),
        # found by name: this platform command knows no app above it.
        for config in apps.get_app_configs():
            if module_has_submodule(config.module, "demo"):
                import_module(f"{config.name}.demo").load(stdout=self.stdout, staff=staff)
        self.stdout.write(
            self.style.SUCCESS("Demo data ready. Every demo password: " + DEMO_PASSWORD)
        )
        for label, email, tenant_id in rows:
            self.stdout.write(f"  {label:<22} {email:<32} tenant {tenant_id}")
