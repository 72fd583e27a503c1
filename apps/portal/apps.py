from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The recipient's side: the hosted preference page, the demo page and the web components' files."""

    name = "apps.portal"
    label = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from apps.core.conf import register_settings
        from apps.portal.conf import inbox_demo_settings
        from apps.portal.cors import origin_allowed

        check_request_enabled.connect(origin_allowed, dispatch_uid="signalbox.portal.cors")
        register_settings(inbox_demo_settings)
