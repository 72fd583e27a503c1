"""`manage.py rotate_encryption_key`: re-encrypts every stored secret under the first key of
SIGNALBOX_ENCRYPTION_KEY, so an old key can then be removed (docs/operations.md, "Rotating the
encryption key").

The secrets at rest: provider credentials (ProviderConfig.secrets_encrypted), webhook endpoint
secrets (WebhookEndpoint.secret_encrypted, previous_secret_encrypted) and recipients' own webhook
secrets (Recipient.webhook_secret_encrypted). Each row is rewritten with a compare-and-set on its old
ciphertext, so a secret changed through the API meanwhile is never overwritten; rerunning is harmless.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models

from apps.core import crypto
from apps.events.models import WebhookEndpoint
from apps.notifications.models import Recipient
from apps.providers.models import ProviderConfig

ENCRYPTED_FIELDS: tuple[tuple[type[models.Model], str], ...] = (
    (ProviderConfig, "secrets_encrypted"),
    (WebhookEndpoint, "secret_encrypted"),
    (WebhookEndpoint, "previous_secret_encrypted"),
    (Recipient, "webhook_secret_encrypted"),
)
BATCH = 500


class Command(BaseCommand):
    help = "Re-encrypts every stored secret under the first SIGNALBOX_ENCRYPTION_KEY key; --generate-key prints one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--generate-key", action="store_true", help="Print a new Fernet key and exit.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be re-encrypted; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate_key"]:
            self.stdout.write(Fernet.generate_key().decode())
            return
        failed = 0
        for model, field in ENCRYPTED_FIELDS:
            rotated, unreadable = self._rotate(model, field, dry_run=options["dry_run"])
            failed += unreadable
            verb = "would re-encrypt" if options["dry_run"] else "re-encrypted"
            self.stdout.write(f"{model.__name__}.{field}: {verb} {rotated}, unreadable {unreadable}")
        if failed:
            raise CommandError(
                f"{failed} secrets cannot be decrypted with the configured keys (nor SECRET_KEY's derived key): "
                "add the key they were written with to SIGNALBOX_ENCRYPTION_KEY and run again."
            )

    def _rotate(self, model: type[models.Model], field: str, *, dry_run: bool) -> tuple[int, int]:
        rotated = unreadable = 0
        last_pk: Any = None
        manager = model._default_manager
        while True:
            rows = manager.exclude(**{field: ""}).order_by("pk")
            if last_pk is not None:
                rows = rows.filter(pk__gt=last_pk)
            batch = list(rows.values_list("pk", field)[:BATCH])
            if not batch:
                return rotated, unreadable
            for pk, token in batch:
                try:
                    new_token = crypto.rotate(token)
                except crypto.DecryptionFailed:
                    unreadable += 1
                    continue
                if dry_run:
                    rotated += 1
                    continue
                # Compare-and-set: a secret rotated through the API since the read keeps its new value.
                rotated += manager.filter(pk=pk, **{field: token}).update(**{field: new_token})
            last_pk = batch[-1][0]
