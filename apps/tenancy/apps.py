from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "apps.tenancy"
    label = "tenancy"
    verbose_name = "Tenants and API keys"

    def ready(self) -> None:
        from apps.core.conf import register_settings
        from apps.core.retention import register_tenants
        from apps.tenancy import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from apps.tenancy.conf import tenancy_settings
        from apps.tenancy.models import Tenant

        # Retention purges walk every tenant; core learns who they are from here.
        register_tenants(Tenant.objects.all)
        register_settings(tenancy_settings)
