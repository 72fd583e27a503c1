from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.tenancy.models import Tenant
from apps.tenancy.services import api_key_create


class Command(BaseCommand):
    help = "Creates an API key for a tenant (or a platform key) and prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", nargs="?", help="Tenant slug (omit with --platform).")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--scope", action="append", dest="scopes", help="Repeatable; default '*'.")
        parser.add_argument("--expires-in-days", type=int)
        parser.add_argument("--platform", action="store_true", help="A staff key that acts via X-Tenant-ID.")

    def handle(self, *args: Any, **opts: Any) -> None:
        tenant = None
        if not opts["platform"]:
            if not opts["tenant"]:
                raise CommandError("Name a tenant slug, or pass --platform.")
            tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant {opts['tenant']!r}.")
        days = opts["expires_in_days"]
        _, clear = api_key_create(
            tenant=tenant,
            name=opts["name"],
            scopes=opts["scopes"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            platform=opts["platform"],
            created_by="cli",
        )
        self.stdout.write(clear)
