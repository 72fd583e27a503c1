# Audit entries named an API key by its primary key, `<prefix>.<SHA-512 hash>`, which every `read` key
# could list: rewrite them to the prefix alone (`sbx_AbCd1234`), as audit_record now writes them.

from django.db import migrations
from django.db.models.functions import Substr

KEY_ID = r"^sbx_[A-Za-z0-9]{8}\."
PREFIX_LENGTH = len("sbx_") + 8


def redact(apps, schema_editor):
    AuditEntry = apps.get_model("observability", "AuditEntry")
    for column in ("target_id", "actor_id"):
        AuditEntry.objects.filter(**{f"{column}__regex": KEY_ID}).update(**{column: Substr(column, 1, PREFIX_LENGTH)})


class Migration(migrations.Migration):
    dependencies = [
        ("observability", "0002_operations_dashboard"),
    ]

    # The hashes are gone for good: nothing to restore on the way back.
    operations = [migrations.RunPython(redact, migrations.RunPython.noop)]
