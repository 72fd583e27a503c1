"""The `LiveSink` the realtime app registers in apps.core.live: publishes to the Channels layer.

The layer and the Redis client are imported on first use, not at start-up: a process that never
publishes (a management command, the API before its first change) does not load them, nor what
redis-py loads with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from asgiref.sync import async_to_sync

from apps.core.live import Message

log = logging.getLogger(__name__)


class ChannelLayerSink:
    def listening(self, groups: Sequence[str]) -> set[str]:
        from apps.realtime import presence

        return presence.listening(list(groups))

    def publish(self, messages: Sequence[Message]) -> None:
        """One layer connection for the whole batch; a failure is logged, never raised: the
        change is committed, and a stream that missed it reads it back on reconnect."""
        try:
            async_to_sync(_send_all)(list(messages))
        except Exception:
            log.warning("live publish failed; streams will replay from the database", exc_info=True)


async def _send_all(messages: list[Message]) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert layer is not None
    for group, message in messages:
        await layer.group_send(group, {"type": "live", "m": message})
