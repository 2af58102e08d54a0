"""The quick start's webhooks and notifications (called by `manage.py load_demo_data`, which
loads each app's `demo` module after the tenants): in the `acme` organization,

- "Local receiver": an endpoint on a receiver this command runs for a moment on loopback, so
  its deliveries really succeed, signed and recorded;
- "Audit sink": every event to `https://hooks.acme.example.com/...`, a host that does not
  resolve, so its deliveries show failed attempts and their retry schedule;
- "Legacy bridge": an endpoint disabled with a reason;
- a documents quota past its warning threshold (a notification to the owners and admins, in
  the app and by email) and a notification from the owner to the viewer.

Runs once: an organization that already has the endpoints is left as it is.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings

from accounts.services import api_key_create, api_key_revoke
from tenants.models import Membership, Role, Tenant
from tenants.services.quotas import quota_consume, quota_states

from .models import WebhookEndpoint
from .services import (
    notification_send,
    webhook_deliveries_send,
    webhook_endpoint_create,
    webhook_endpoint_update,
)

DEMO_SLUG = "acme"
LOCAL_RECEIVER = "Local receiver"


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"received": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def load(*, stdout, staff) -> None:
    tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
    if tenant is None or WebhookEndpoint.objects.filter(tenant=tenant).exists():
        return
    owner = Membership.objects.get(tenant=tenant, role=Role.OWNER, user__isnull=False).user
    viewer = Membership.objects.filter(tenant=tenant, role=Role.VIEWER).first()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local_url = f"http://127.0.0.1:{server.server_address[1]}/webhooks"
        if settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS and settings.WEBHOOKS_ALLOW_HTTP:
            webhook_endpoint_create(
                tenant=tenant,
                actor=owner,
                name=LOCAL_RECEIVER,
                url=local_url,
                events=["organization.api_key.created", "organization.api_key.revoked"],
                description="A receiver the demo ran on loopback while it loaded.",
            )
        webhook_endpoint_create(
            tenant=tenant,
            actor=owner,
            name="Audit sink",
            url="https://hooks.acme.example.com/control-plane",
            events=["*"],
            description="Every event; the host does not resolve, so attempts fail and retry.",
        )
        legacy, _ = webhook_endpoint_create(
            tenant=tenant,
            actor=owner,
            name="Legacy bridge",
            url="https://legacy.acme.example.com/hooks",
            events=["organization.member.joined"],
        )
        webhook_endpoint_update(webhook_endpoint=legacy, actor=owner, is_active=False)

        # Events the endpoints receive.
        api_key_create(tenant=tenant, actor=owner, name="CI pipeline", scopes=["read"])
        old_key, _ = api_key_create(tenant=tenant, actor=owner, name="Old laptop", scopes=["read"])
        api_key_revoke(api_key=old_key, actor=owner)
        documents = quota_states(tenant)["documents"]
        wanted = documents.limit * 85 // 100 - documents.current
        if documents.limit and wanted > 0:
            quota_consume(tenant=tenant, resource="documents", amount=wanted)
        if viewer is not None:
            notification_send(
                tenant=tenant,
                actor=owner,
                recipient=viewer.user,
                title="Welcome to Acme",
                message="Your account is ready: the playground and analytics are yours to read.",
            )
        report = webhook_deliveries_send(concurrency=2)
    finally:
        server.shutdown()
        server.server_close()
    stdout.write(
        f"  webhooks of {DEMO_SLUG}: 3 endpoints, {report.succeeded} deliveries succeeded and "
        f"{report.failed} failed (retrying) on the first run"
    )
