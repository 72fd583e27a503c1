"""`make run`'s demo data: a tenant, a staff user, a template and a recipient, and a fresh API key.

Everything but the key is created once; the key is new on every run (the previous demo key is
revoked) because a key is shown only once. The printed `curl` sends a real notification that
arrives in the provider sandbox's outbox and in the demo recipient's in-app inbox.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.actors import Actor
from apps.notifications.models import Recipient, Template
from apps.notifications.services.recipients import recipients_upsert
from apps.notifications.services.templates import template_create
from apps.tenancy.models import ApiKey, Tenant
from apps.tenancy.services import api_key_create, api_key_revoke

DEMO_KEY_NAME = "make-run demo"
DEMO_TEMPLATE = {
    "name": "Welcome",
    "category": "account",
    "variables": [{"name": "product", "example": "Signalbox"}],
    "default_channels": ["email", "in_app"],
    "content": {
        "default": {
            "email": {
                "subject": "Welcome to {{ product }}, {{ recipient.name }}",
                "text": "Hello {{ recipient.name }}, your {{ product }} account is ready.",
                "html": "<p>Hello <b>{{ recipient.name }}</b>, your {{ product }} account is ready.</p>",
            },
            "in_app": {"title": "Welcome to {{ product }}", "body": "Your account is ready."},
        },
        "fr": {"email": {"subject": "Bienvenue sur {{ product }}", "text": "Bonjour {{ recipient.name }} !"}},
    },
}


class Command(BaseCommand):
    help = "Creates the demo tenant, admin user, template and recipient, and a new API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default="8000")
        parser.add_argument("--flower-port", default="5555")
        parser.add_argument("--sandbox-port", default="8025")

    def handle(self, *args: Any, port: str, flower_port: str, sandbox_port: str, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("bootstrap_demo makes a known admin password: it runs only with DEBUG on.")
        tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo tenant"})
        user_model = get_user_model()
        if not user_model.objects.filter(username="admin").exists():
            user_model.objects.create_superuser("admin", "admin@example.com", "admin")
        if not Template.objects.filter(tenant=tenant, key="welcome").exists():
            template_create(
                tenant=tenant, key="welcome", definition=DEMO_TEMPLATE, actor=Actor(kind="system", id="make run")
            )
        if not Recipient.objects.filter(tenant=tenant, external_id="ada").exists():
            recipients_upsert(
                tenant=tenant,
                items=[{"external_id": "ada", "name": "Ada", "email": "ada@example.com", "locale": "en"}],
            )
        for old in ApiKey.objects.filter(tenant=tenant, name=DEMO_KEY_NAME, revoked=False):
            api_key_revoke(key=old)
        _, clear = api_key_create(tenant=tenant, name=DEMO_KEY_NAME, created_by="make run")
        base = f"http://127.0.0.1:{port}"
        body = '{"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox"}}'
        self.stdout.write(
            f"""
Signalbox is starting.
  API docs     {base}/api/docs/
  Admin        {base}/admin/   (user admin / password admin - local demo only)
  Flower       http://127.0.0.1:{flower_port}/
  Outbox       http://127.0.0.1:{sandbox_port}/   (the provider sandbox: what each channel received)
  Demo API key {clear}   (shown once)

Send a notification, then watch it arrive in the outbox:
  curl -s -X POST {base}/api/v1/notifications/ \\
    -H "Authorization: Bearer {clear}" -H "Content-Type: application/json" \\
    -d '{body}'
Poll it (use the id it answered):
  curl -s -H "Authorization: Bearer {clear}" {base}/api/v1/notifications/<id>/
"""
        )
