"""ASGI entry point of the `realtime` process (`uvicorn project.asgi:application`, docs/realtime.md).

It serves only the live streams (WebSocket and Server-Sent Events) through Django Channels; the
REST API stays on WSGI (gunicorn, project/wsgi.py). At shutdown (SIGTERM) every open stream is
closed with 1012 / `event: reconnect`, so clients move to another process at once.
"""

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.realtime.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402
from apps.realtime.transports import DRAINING  # noqa: E402

router = ProtocolTypeRouter({"http": URLRouter(http_urlpatterns), "websocket": URLRouter(websocket_urlpatterns)})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                DRAINING.set()
                await send({"type": "lifespan.shutdown.complete"})
                return
    await router(scope, receive, send)
