from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.observability.audit import redact_key_id
from apps.observability.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer[AuditEntry]):
    actor = serializers.SerializerMethodField(help_text="Who: `{type, id}`; type is api_key, staff or system.")
    target = serializers.SerializerMethodField(help_text="What: `{type, id}` (type is `app_label.model`).")

    class Meta:
        model = AuditEntry
        fields = ["id", "created_at", "action", "actor", "target", "data", "request_id"]

    # Redacted here too, for any row written before audit_record redacted (migration 0003 rewrote those).
    def get_actor(self, entry: AuditEntry) -> dict[str, Any]:
        return {"type": entry.actor_type, "id": redact_key_id(entry.actor_id)}

    def get_target(self, entry: AuditEntry) -> dict[str, Any]:
        return {"type": entry.target_type, "id": redact_key_id(entry.target_id)}
