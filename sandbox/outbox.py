"""The outbox page at `/`: what each channel received, newest first, refreshed every 3 s.

The page polls the message count and reloads only when it changed, so an open "details"
panel is not folded away every few seconds (a plain meta refresh is the no-script fallback).

Everything shown came from a client, so every value goes through `html.escape`; HTML
bodies are shown as source, never rendered.
"""

from __future__ import annotations

import json
from html import escape

from aiohttp import web

from sandbox.config import PROVIDERS
from sandbox.context import get_sandbox
from sandbox.state import Message

REFRESH_SECONDS = 3
PREVIEW_CHARS = 160

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; } nav a { margin-right: .8rem; } nav a.on { font-weight: bold; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; } td.mono, pre { font-family: ui-monospace, monospace; font-size: 12px; }
pre { white-space: pre-wrap; max-height: 20rem; overflow: auto; background: #fafafa; padding: .5rem; }
.tag { display: inline-block; padding: 0 .4rem; border-radius: 3px; background: #e8eefc; }
.bad { background: #fde2e2; } .ok { background: #e2f7e2; } .empty { color: #777; margin-top: 1rem; }
"""

_RELOAD_SCRIPT = """
const seen = %d;
setInterval(async () => {
  try {
    const counts = await (await fetch("/_sandbox/counts")).json();
    if (counts.total !== seen) location.reload();
  } catch (e) {}
}, %d);
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _preview(message: Message) -> str:
    body = message.text or message.html or ""
    return body if len(body) <= PREVIEW_CHARS else body[:PREVIEW_CHARS] + "…"


def _row(message: Message) -> str:
    signature = message.extra.get("signature_valid")
    badge = ""
    if signature is not None:
        badge = (
            f' <span class="tag {"ok" if signature else "bad"}">signature {"valid" if signature else "invalid"}</span>'
        )
    details = (
        f"<details><summary>details</summary>"
        f"<pre>headers: {_e(json.dumps(message.headers, indent=2, ensure_ascii=False))}</pre>"
        + (f"<pre>html: {_e(message.html)}</pre>" if message.html else "")
        + f"<pre>extra: {_e(json.dumps(message.extra, indent=2, ensure_ascii=False, default=str))}</pre>"
        "</details>"
    )
    return (
        "<tr>"
        f'<td class="mono">{_e(message.created_at)}</td>'
        f'<td><span class="tag">{_e(message.provider)}</span> {_e(message.channel)}{badge}</td>'
        f"<td>{_e(message.recipient)}</td>"
        f"<td>{_e(message.sender)}</td>"
        f"<td>{_e(message.subject)}</td>"
        f"<td>{_e(_preview(message))}{details}</td>"
        f'<td class="mono">{_e(message.idempotency_key)}</td>'
        "</tr>"
    )


def render(messages: list[Message], *, provider: str | None, counts: dict[str, int]) -> str:
    links = [f'<a href="/" class="{"on" if provider is None else ""}">all ({sum(counts.values())})</a>']
    for name in PROVIDERS:
        css = "on" if provider == name else ""
        links.append(f'<a href="/?provider={name}" class="{css}">{name} ({counts.get(name, 0)})</a>')
    rows = "".join(_row(m) for m in sorted(messages, key=lambda m: m.seq, reverse=True))
    table = (
        "<table><thead><tr><th>received</th><th>provider</th><th>to</th><th>from</th>"
        f"<th>subject / title</th><th>body</th><th>idempotency key</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else '<p class="empty">Nothing received yet.</p>'
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>'
        f"<title>Signalbox sandbox outbox</title><style>{_STYLE}</style></head><body>"
        f"<h1>Signalbox sandbox outbox</h1><nav>{''.join(links)}</nav>{table}"
        f"<script>{_RELOAD_SCRIPT % (sum(counts.values()), REFRESH_SECONDS * 1000)}</script></body></html>"
    )


async def outbox(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    provider = request.query.get("provider")
    if provider not in PROVIDERS:
        provider = None
    counts: dict[str, int] = {}
    for message in store.messages:
        counts[message.provider] = counts.get(message.provider, 0) + 1
    page = render(store.find_messages(provider=provider), provider=provider, counts=counts)
    return web.Response(text=page, content_type="text/html", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", outbox)
