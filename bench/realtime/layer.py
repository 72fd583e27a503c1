"""How many messages per second one process receives through the channel layer, alone: N groups of
one channel each in this process, M messages sent to them from another event loop's connection,
timed until all arrive. Compares channels-redis's list layer (RedisChannelLayer, what streams use)
with its pub/sub layer (RedisPubSubChannelLayer).

    .venv/bin/python -m bench.realtime.layer --groups 1000 --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer


async def measure(layer: Any, sender: Any, groups: int, messages: int) -> dict[str, float]:
    channels = [await layer.new_channel() for _ in range(groups)]
    started = time.monotonic()
    for i, channel in enumerate(channels):
        await layer.group_add(f"g{i}", channel)
    subscribe_s = time.monotonic() - started
    got = 0
    done = asyncio.Event()

    async def read(channel: str) -> None:
        nonlocal got
        while True:
            await layer.receive(channel)
            got += 1
            if got == messages:
                done.set()

    readers = [asyncio.create_task(read(c)) for c in channels]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    gate = asyncio.Semaphore(64)  # as a few publishing processes would

    async def send(i: int) -> None:
        async with gate:
            await sender.group_send(f"g{i % groups}", {"type": "m", "n": i})

    await asyncio.gather(*(send(i) for i in range(messages)))
    sent_s = time.monotonic() - started
    await asyncio.wait_for(done.wait(), 120)
    received_s = time.monotonic() - started
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return {
        "group_add_per_s": round(groups / subscribe_s),
        "send_s": round(sent_s, 2),
        "received_per_s": round(messages / received_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    hosts = [{"address": args.redis, "socket_timeout": 15, "max_connections": 512}]
    prefix = f"sbxbenchlayer{os.getpid()}"
    report = {}
    for name, cls in (("lists", RedisChannelLayer), ("pubsub", RedisPubSubChannelLayer)):
        options = {"capacity": 5000, "expiry": 60} if cls is RedisChannelLayer else {}  # as in settings
        layer, sender = cls(hosts=hosts, prefix=prefix, **options), cls(hosts=hosts, prefix=prefix, **options)
        report[name] = asyncio.run(measure(layer, sender, args.groups, args.messages))
    report["load_average"] = os.getloadavg()  # type: ignore[assignment]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
