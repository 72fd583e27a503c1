"""Tells drf-spectacular how recipient-token authentication looks in the OpenAPI schema."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class RecipientTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.notifications.authentication.RecipientTokenAuthentication"
    name = "RecipientToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Recipient <token>` from POST /api/v1/recipients/{external_id}/inbox-token/ "
            "(or `?token=<token>` for EventSource). Opens that recipient's inbox only.",
        }
