"""The tenancy app: registers the tenants with core, and keeps the API key cache honest."""

from typing import Any

from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "apps.tenancy"
    label = "tenancy"
    verbose_name = "Tenants and API keys"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.core.conf import register_settings
        from apps.core.retention import register_tenants
        from apps.tenancy import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from apps.tenancy.conf import tenancy_settings
        from apps.tenancy.credentials import credentials_changed
        from apps.tenancy.models import ApiKey, Tenant

        # Retention purges walk every tenant; core learns who they are from here.
        register_tenants(Tenant.objects.all)
        register_settings(tenancy_settings)

        # The one use of signals here, and why: every process caches verified keys with their tenant
        # (apps/tenancy/credentials.py), and a tenant or key saved or deleted through any path (admin,
        # shell, a cascade) must reach them. The services' queryset updates call it themselves.
        def changed(**kwargs: Any) -> None:
            credentials_changed()

        for model in (Tenant, ApiKey):
            name = model.__name__
            post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"credentials:save:{name}")
            post_delete.connect(changed, sender=model, weak=False, dispatch_uid=f"credentials:delete:{name}")
