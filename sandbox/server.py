"""Wiring: the aiohttp app and the SMTP server, started together on one event loop.

`start()` binds both (port 0 picks a free port) and returns the bound ports; `serve()`
runs until SIGINT/SIGTERM and, when asked, writes the ports to a ready file so a parent
process knows when and where to connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass

from aiohttp import web

from sandbox import control, outbox
from sandbox.config import SandboxConfig
from sandbox.context import SANDBOX, Sandbox
from sandbox.providers import fcm, hooks, sendgrid, slack, twilio
from sandbox.smtp import start_smtp
from sandbox.state import Store

log = logging.getLogger(__name__)

# Hanging fault handlers must not hold up shutdown.
SHUTDOWN_TIMEOUT = 0.5


def build_app(sandbox: Sandbox) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[SANDBOX] = sandbox
    for module in (sendgrid, twilio, fcm, slack, hooks, control, outbox):
        module.add_routes(app)
    return app


@dataclass
class Running:
    sandbox: Sandbox
    runner: web.AppRunner
    smtp_server: asyncio.Server
    http_port: int
    smtp_port: int

    async def stop(self) -> None:
        self.smtp_server.close()
        await self.runner.cleanup()


async def start(config: SandboxConfig) -> Running:
    sandbox = Sandbox(config=config, store=Store(config.data_dir))
    runner = web.AppRunner(build_app(sandbox), shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.http_port)
    await site.start()
    http_port = site.port
    smtp_server = await start_smtp(sandbox.store, config.host, config.smtp_port)
    smtp_port = smtp_server.sockets[0].getsockname()[1]
    # Report the bound ports (port 0 means "any free port") to the control API.
    config.http_port, config.smtp_port = http_port, smtp_port
    log.info("Sandbox listening: http://%s:%s, smtp %s:%s", config.host, http_port, config.host, smtp_port)
    return Running(sandbox, runner, smtp_server, http_port, smtp_port)


def write_ready_file(config: SandboxConfig, running: Running) -> None:
    if config.ready_file is None:
        return
    ready = {"http_port": running.http_port, "smtp_port": running.smtp_port, "pid": os.getpid()}
    # Write then rename, so the reader never sees half a file.
    partial = config.ready_file.with_suffix(".partial")
    partial.write_text(json.dumps(ready), encoding="utf-8")
    partial.replace(config.ready_file)


async def serve(config: SandboxConfig) -> None:
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    write_ready_file(config, running)
    print(
        f"Signalbox sandbox: outbox http://{config.host}:{running.http_port}/  smtp {config.host}:{running.smtp_port}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await running.stop()
