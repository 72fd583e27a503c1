from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "apps.realtime"
    label = "realtime"
    verbose_name = "Signalbox realtime"

    def ready(self) -> None:
        from django.conf import settings

        from apps.core.live import live_register
        from apps.realtime.sink import ChannelLayerSink

        # Every process (API, workers, realtime) publishes through the layer when one is configured.
        live_register(ChannelLayerSink() if settings.CHANNEL_LAYERS else None)
