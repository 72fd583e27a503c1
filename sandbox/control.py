"""The control API under `/_sandbox/`: what tests use to inspect, reset and break the sandbox.

Every answer is JSON; every error is `{"error": message, "code": stable_code}` with a 4xx.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from standardwebhooks.webhooks import Webhook

from sandbox import callbacks
from sandbox.config import DEFAULT_FCM_PROJECT_ID, PROVIDERS
from sandbox.context import base_url, get_sandbox
from sandbox.faults import FaultError, fault_from_json
from sandbox.keys import event_webhook_public_key, new_service_account

PREFIX = "/_sandbox"


def api_error(message: str, code: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def config(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    return web.json_response(
        {**sandbox.config.public(), "http_url": base_url(request), "token_uri": f"{base_url(request)}/token"}
    )


async def list_messages(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    provider = request.query.get("provider")
    if provider is not None and provider not in PROVIDERS:
        return api_error(f"provider must be one of {', '.join(PROVIDERS)}.", "unknown_provider")
    messages = store.find_messages(
        provider=provider, to=request.query.get("to"), idempotency_key=request.query.get("idempotency_key")
    )
    return web.json_response({"messages": [m.to_dict() for m in messages]})


async def get_message(request: web.Request) -> web.Response:
    message = get_sandbox(request).store.find_message(request.match_info["id"])
    if message is None:
        return api_error("No such message.", "message_not_found", 404)
    return web.json_response(message.to_dict())


async def counts(request: web.Request) -> web.Response:
    return web.json_response(get_sandbox(request).store.counts())


async def list_requests(request: web.Request) -> web.Response:
    provider = request.query.get("provider")
    attempts = [a.to_dict() for a in get_sandbox(request).store.attempts if provider in (None, a.provider)]
    return web.json_response({"requests": attempts})


async def reset(request: web.Request) -> web.Response:
    get_sandbox(request).store.reset()
    return web.json_response({"ok": True})


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": [f.to_dict() for f in get_sandbox(request).store.faults]})


async def add_fault(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    try:
        fault = fault_from_json(await json_body(request), hang_seconds=sandbox.config.hang_seconds)
    except FaultError as exc:
        return api_error(str(exc), "invalid_fault")
    sandbox.store.faults.append(fault)
    return web.json_response(fault.to_dict(), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    get_sandbox(request).store.faults.clear()
    return web.json_response({"ok": True})


async def delete_fault(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    kept = [f for f in store.faults if f.id != request.match_info["id"]]
    if len(kept) == len(store.faults):
        return api_error("No such fault.", "fault_not_found", 404)
    store.faults[:] = kept
    return web.json_response({"ok": True})


async def add_webhook_secret(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(body.get("secret"), str):
        return api_error("Give name and secret (a Standard Webhooks secret, whsec_<base64>).", "invalid_secret")
    try:
        Webhook(body["secret"])
    except ValueError as exc:
        return api_error(f"Not a Standard Webhooks secret: {exc}", "invalid_secret")
    get_sandbox(request).store.webhook_secrets[body["name"]] = body["secret"]
    return web.json_response({"name": body["name"]}, status=201)


async def get_keys(request: web.Request) -> web.Response:
    seed = get_sandbox(request).config.event_key_seed
    return web.json_response({"sendgrid_event_webhook_public_key": event_webhook_public_key(seed), "seed": seed})


async def set_keys(request: web.Request) -> web.Response:
    body = await json_body(request)
    seed = body.get("seed") if isinstance(body, dict) else None
    if not isinstance(seed, str) or not seed:
        return api_error("Give seed, the string the SendGrid signing key is derived from.", "invalid_seed")
    get_sandbox(request).config.event_key_seed = seed
    return await get_keys(request)


async def add_service_account(request: web.Request) -> web.Response:
    """Register a public key for an account (`client_email`, `public_key` PEM), or make a new account."""
    sandbox = get_sandbox(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        return api_error("Expected a JSON object.", "invalid_service_account")
    if "public_key" in body:
        email, pem = body.get("client_email"), body.get("public_key")
        if not isinstance(email, str) or not isinstance(pem, str):
            return api_error("client_email and public_key (PEM) must be strings.", "invalid_service_account")
        try:
            serialization.load_pem_public_key(pem.encode("ascii"))
        except ValueError:
            return api_error("public_key is not a PEM public key.", "invalid_service_account")
        sandbox.store.service_account_keys[email] = pem.encode("ascii")
        return web.json_response({"client_email": email}, status=201)
    info, public_pem = new_service_account(
        token_uri=f"{base_url(request)}/token",
        project_id=str(body.get("project_id") or DEFAULT_FCM_PROJECT_ID),
        client_email=body.get("client_email"),
    )
    sandbox.store.service_account_keys[info["client_email"]] = public_pem
    return web.json_response(info, status=201)


async def own_service_account(request: web.Request) -> web.Response:
    """A ready-made service account for local setups: `curl …/_sandbox/fcm/service-account > sa.json`."""
    sandbox = get_sandbox(request)
    if sandbox.own_service_account is None:
        info, public_pem = new_service_account(
            token_uri=f"{base_url(request)}/token",
            project_id=DEFAULT_FCM_PROJECT_ID,
            client_email=f"sandbox@{DEFAULT_FCM_PROJECT_ID}.iam.gserviceaccount.com",
        )
        sandbox.store.service_account_keys[info["client_email"]] = public_pem
        sandbox.own_service_account = info
    return web.json_response(sandbox.own_service_account)


async def sendgrid_callback(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        return api_error("Give url and events.", "invalid_callback")
    try:
        result = await callbacks.play_sendgrid(
            sandbox.store, url=body["url"], events=body.get("events"), seed=sandbox.config.event_key_seed
        )
    except callbacks.CallbackError as exc:
        return api_error(str(exc), "invalid_callback")
    return web.json_response(result)


async def twilio_callback(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        return api_error("Give url and params (or message_sid and status).", "invalid_callback")
    try:
        result = await callbacks.play_twilio(
            sandbox.store,
            body=body,
            account_sid=sandbox.config.twilio_account_sid,
            auth_token=str(body.get("auth_token") or sandbox.config.twilio_auth_token),
        )
    except callbacks.CallbackError as exc:
        return api_error(str(exc), "invalid_callback")
    return web.json_response(result)


async def set_auto_callback(request: web.Request) -> web.Response:
    """Report every message a provider accepts from now on (sandbox/callbacks.py, "automatic")."""
    sandbox = get_sandbox(request)
    try:
        rule = callbacks.auto_callback_from_json(await json_body(request))
    except callbacks.CallbackError as exc:
        return api_error(str(exc), "invalid_callback")
    sandbox.store.auto_callbacks[rule["provider"]] = rule
    return web.json_response(rule, status=201)


async def list_auto_callbacks(request: web.Request) -> web.Response:
    return web.json_response({"auto_callbacks": list(get_sandbox(request).store.auto_callbacks.values())})


async def clear_auto_callbacks(request: web.Request) -> web.Response:
    get_sandbox(request).store.auto_callbacks.clear()
    return web.json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get(f"{PREFIX}/health", health)
    router.add_get(f"{PREFIX}/config", config)
    router.add_get(f"{PREFIX}/messages", list_messages)
    router.add_get(f"{PREFIX}/messages/{{id}}", get_message)
    router.add_get(f"{PREFIX}/counts", counts)
    router.add_get(f"{PREFIX}/requests", list_requests)
    router.add_post(f"{PREFIX}/reset", reset)
    router.add_get(f"{PREFIX}/faults", list_faults)
    router.add_post(f"{PREFIX}/faults", add_fault)
    router.add_delete(f"{PREFIX}/faults", clear_faults)
    router.add_delete(f"{PREFIX}/faults/{{id}}", delete_fault)
    router.add_post(f"{PREFIX}/webhook-secrets", add_webhook_secret)
    router.add_get(f"{PREFIX}/keys", get_keys)
    router.add_post(f"{PREFIX}/keys", set_keys)
    router.add_post(f"{PREFIX}/service-accounts", add_service_account)
    router.add_get(f"{PREFIX}/fcm/service-account", own_service_account)
    router.add_post(f"{PREFIX}/callbacks/sendgrid", sendgrid_callback)
    router.add_post(f"{PREFIX}/callbacks/twilio", twilio_callback)
    router.add_get(f"{PREFIX}/auto-callbacks", list_auto_callbacks)
    router.add_post(f"{PREFIX}/auto-callbacks", set_auto_callback)
    router.add_delete(f"{PREFIX}/auto-callbacks", clear_auto_callbacks)
