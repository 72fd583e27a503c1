"""The egress guard at send time: every tenant- or recipient-chosen destination is resolved once,
refused when internal, connected to at the checked address, and never followed through a redirect.

Two local servers stand in for the network: `internal` (a service that must stay unreachable; it
answers a secret to anything) and `redirector` (a "public" host answering 302 to `internal`).
Names are made to resolve through the guard's resolver hook (`apps.core.net.resolver`), since DNS
cannot be controlled here; the system resolver knows none of the `*.tenant.test` names, so a
connection that reaches a local server through one of them used the address the guard checked.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import override_settings

from apps.core import net
from apps.core.net import UnsafeUrl, address_refusal, guarded_session, resolve_public_address
from apps.providers.adapters import Adapter
from apps.providers.adapters.fcm import FcmProvider
from apps.providers.adapters.sendgrid import SendGridProvider
from apps.providers.adapters.slack import SlackProvider
from apps.providers.adapters.smtp import SmtpProvider
from apps.providers.adapters.twilio import TwilioProvider
from apps.providers.adapters.webhook import TeamsProvider, WebhookProvider
from apps.providers.base import Channel, Message, Outcome
from apps.providers.models import ProviderConfig
from sandbox.keys import new_service_account
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import WEBHOOK_SECRET, message, sandbox_config_for

SECRET = "internal-service-secret-7c1e"
NAME = "api.tenant.test"


class Server:
    """An HTTP server on 127.0.0.1 that records connections and requests and answers with `answer`."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                answer(self)

            do_GET = do_POST = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Counting(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                recorder.connections += 1
                return True

        self.httpd = Counting(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def internal() -> Iterator[Server]:
    """A service on the platform's network: answers its secret to any method, as metadata services do."""
    server = Server(lambda h: _reply(h, 200, json.dumps({"error": SECRET, "message": SECRET}).encode()))
    yield server
    server.close()


@pytest.fixture
def redirector(internal: Server) -> Iterator[Server]:
    """A host the tenant controls, answering every request with 302 to the internal service."""
    server = Server(lambda h: _reply(h, 302, b'{"moved": true}', {"Location": f"{internal.url}/latest/meta-data"}))
    yield server
    server.close()


@pytest.fixture
def accepting() -> Iterator[Server]:
    """A host that accepts anything with 202 (what SendGrid answers), recording the Host header."""
    server = Server(lambda h: _reply(h, 202, b"", {"X-Message-Id": "m-1"}))
    yield server
    server.close()


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Makes `*.tenant.test` names answer through the guard's resolver hook; returns the lookups made.

    `resolve(name=[first answer], …)`: each lookup of a name takes the next answer (the last one
    repeats), so a name can resolve public first and private next (DNS rebinding). The system
    resolver is made to fail for these names, so only the guard can have resolved them.
    """
    answers: dict[str, list[list[str]]] = {}
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def hook(host: str, port: int) -> list[str]:
        if host not in answers:
            return net.system_resolver(host, port)
        lookups.append(host)
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def system(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            raise AssertionError(f"{host} was resolved outside the guard")
        return real_getaddrinfo(host, *args, **kwargs)

    def configure(**names: list[str] | list[list[str]]) -> list[str]:
        for name, value in names.items():
            host = name.replace("_", ".")
            answers[host] = [list(v) for v in value] if value and isinstance(value[0], list) else [list(value)]  # type: ignore[arg-type]
        return lookups

    monkeypatch.setattr(net, "resolver", hook)
    monkeypatch.setattr(socket, "getaddrinfo", system)
    return configure


def email() -> Message:
    return message(Channel.EMAIL, "ada@example.com", subject="Hello", text="Hi there.", html="<p>Hi there.</p>")


def _service_account_json(token_uri: str) -> str:
    info, _ = new_service_account(token_uri=token_uri, project_id="egress-test")
    return json.dumps(info)


def build(kind: str, base: str, sandbox: SandboxProcess, fcm_config: dict[str, Any]) -> tuple[Adapter, Message]:
    """An adapter of `kind` whose tenant-chosen destination is `base` (an http URL), and a message for it."""
    host, _, port = base.removeprefix("http://").partition(":")
    if kind == "sendgrid":
        return SendGridProvider.from_config(sandbox_config_for(sandbox, "sendgrid", host=base)), email()
    if kind == "twilio":
        sms = message(Channel.SMS, "+14155550100", text="Hi there.")
        return TwilioProvider.from_config(sandbox_config_for(sandbox, "twilio", api_base_url=base)), sms
    if kind == "slack":
        config = sandbox_config_for(sandbox, "slack", api_base_url=f"{base}/slack/api/")
        return SlackProvider.from_config(config), message(Channel.CHAT, "#deploys", text="Hi there.")
    if kind == "fcm":
        config = {**fcm_config, "endpoint": f"{base}/v1/projects"}
        return FcmProvider.from_config(config), message(Channel.PUSH, ["token-1"], title="Hi", text="Hi there.")
    if kind == "fcm-token_uri":
        config = {**fcm_config, "service_account_json": _service_account_json(f"{base}/token")}
        return FcmProvider.from_config(config), message(Channel.PUSH, ["token-1"], title="Hi", text="Hi there.")
    if kind == "smtp":
        config = sandbox_config_for(sandbox, "smtp", host=host, port=int(port or 25))
        return SmtpProvider.from_config(config), email()
    if kind == "slack-webhook":
        return SlackProvider.from_config({"webhook_url": f"{base}/services/T0/B0/x"}), message(
            Channel.CHAT, "", text="Hi"
        )
    if kind == "teams":
        return TeamsProvider.from_config({"webhook_url": f"{base}/hook"}), message(Channel.CHAT, "", text="Hi")
    if kind == "webhook":
        return WebhookProvider.from_config({"signing_secret": WEBHOOK_SECRET}), message(Channel.WEBHOOK, f"{base}/h")
    raise AssertionError(kind)


# --- the classifier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not one to bind
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2002:7f00:1::1", "6to4"),  # 6to4 around 127.0.0.1
        ("2002:5db8:d822::1", "6to4"),  # even around a public address: the relay is not ours to vet
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("64:ff9b::a9fe:a9fe", "NAT64"),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::a00:1", "NAT64"),  # local-use NAT64 prefix
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("::10.0.0.1", "private"),
    ],
)
def test_every_internal_or_translated_range_is_refused(address: str, reason: str):
    refusal = address_refusal(ipaddress.ip_address(address))

    assert refusal is not None and reason in refusal
    with pytest.raises(UnsafeUrl, match=reason):
        resolve_public_address(f"http://[{address}]/" if ":" in address else f"http://{address}/", allow_private=False)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"])
def test_public_addresses_and_their_mapped_forms_pass(address: str):
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_the_allowance_opens_internal_ranges_but_never_multicast_or_unspecified():
    for address in ("127.0.0.1", "10.0.0.1", "::ffff:127.0.0.1", "2002:7f00:1::1", "64:ff9b::a00:1"):
        assert address_refusal(ipaddress.ip_address(address), allow_private=True) is None, address
    for address in ("224.0.0.1", "0.0.0.0", "::", "::ffff:0.0.0.0"):  # noqa: S104
        assert address_refusal(ipaddress.ip_address(address), allow_private=True) is not None, address


def test_a_name_with_one_internal_answer_among_public_ones_is_refused(resolve):
    resolve(api_tenant_test=["93.184.216.34", "10.0.0.7"])

    with pytest.raises(UnsafeUrl, match="private"):
        resolve_public_address(f"https://{NAME}/", allow_private=False)


# --- redirects ----------------------------------------------------------------------------------------

REDIRECTED = ["sendgrid", "twilio", "slack", "fcm", "fcm-token_uri"]


@pytest.mark.parametrize("kind", REDIRECTED)
def test_a_redirect_to_an_internal_address_is_refused_and_its_target_never_fetched(
    kind: str,
    redirector: Server,
    internal: Server,
    sandbox: SandboxProcess,
    fcm_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    adapter, msg = build(kind, redirector.url, sandbox, fcm_config)

    result = adapter.send(msg)

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "redirect"), result
    assert len(redirector.requests) == 1 and redirector.requests[0][0] == "POST"
    assert internal.connections == 0 and internal.requests == []
    assert SECRET not in result.detail and SECRET not in caplog.text


@pytest.mark.django_db
def test_a_test_send_through_a_redirecting_host_shows_no_internal_answer(
    api: Any, redirector: Server, internal: Server
):
    body = {
        "name": "eu",
        "provider": "sendgrid",
        "options": {"from_email": "Acme <noreply@acme.test>", "host": redirector.url},
        "secrets": {"api_key": "SG.test-key"},
    }
    assert api.post("/api/v1/providers/configs/", body, format="json").status_code == 201

    answer = api.post("/api/v1/providers/eu/test/", {"to": "ada@example.com"}, format="json")

    assert answer.status_code == 200, answer.json()
    assert (answer.json()["outcome"], answer.json()["code"]) == ("permanent", "redirect")
    assert SECRET not in answer.content.decode()
    assert internal.requests == []


# --- refusal at send ----------------------------------------------------------------------------------

REFUSED = ["sendgrid", "twilio", "slack", "fcm-token_uri", "smtp", "slack-webhook", "teams", "webhook"]


@pytest.mark.parametrize("kind", REFUSED)
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_destination_on_loopback_is_refused_at_send_without_connecting(
    kind: str, internal: Server, sandbox: SandboxProcess, fcm_config: dict[str, Any]
):
    adapter, msg = build(kind, internal.url, sandbox, fcm_config)

    result = adapter.send(msg)

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "unsafe_url"), result
    assert "loopback" in result.detail or kind.startswith("fcm")  # FCM sums up its devices' results
    assert internal.connections == 0


@pytest.mark.parametrize("kind", ["sendgrid", "twilio", "slack", "fcm-token_uri", "smtp", "teams"])
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_name_saved_public_that_resolves_internal_at_send_is_refused(
    kind: str, internal: Server, sandbox: SandboxProcess, fcm_config: dict[str, Any], resolve: Any
):
    """DNS rebinding: the config passed its check when saved; at send the same name answers loopback."""
    lookups = resolve(api_tenant_test=[["93.184.216.34"], ["127.0.0.1"]])
    adapter, msg = build(kind, f"http://{NAME}:{internal.port}", sandbox, fcm_config)
    assert net.check_host(NAME, 443) == "93.184.216.34"  # what the check when saved saw

    result = adapter.send(msg)

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "unsafe_url"), result
    assert lookups == [NAME, NAME]
    assert "loopback" in result.detail or kind.startswith("fcm")  # FCM sums up its devices' results
    assert internal.connections == 0


@pytest.mark.parametrize("kind", ["sendgrid", "twilio", "smtp", "webhook"])
def test_a_name_that_does_not_resolve_at_send_is_transient(
    kind: str, sandbox: SandboxProcess, fcm_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    def unresolvable(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(net, "resolver", unresolvable)
    adapter, msg = build(kind, f"http://{NAME}:8080", sandbox, fcm_config)

    result = adapter.send(msg)

    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "unresolvable_host"), result


# --- pinning --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sendgrid", "twilio", "slack", "fcm", "smtp"])
def test_the_sdk_connects_to_the_address_the_guard_checked(
    kind: str, sandbox: SandboxProcess, sandbox_client: SandboxClient, fcm_config: dict[str, Any], resolve: Any
):
    """The name resolves (through the guard) to the sandbox; the system resolver would fail on it."""
    lookups = resolve(sandbox_tenant_test=["127.0.0.1"])
    base = f"http://sandbox.tenant.test:{sandbox.smtp_port if kind == 'smtp' else sandbox.http_port}"
    adapter, msg = build(kind, base, sandbox, fcm_config)

    result = adapter.send(msg)

    assert result.outcome is Outcome.ACCEPTED, result
    assert lookups and set(lookups) == {"sandbox.tenant.test"}
    assert len(sandbox_client.messages()) == 1


def test_the_host_header_names_the_host_while_the_socket_goes_to_the_checked_address(
    accepting: Server, sandbox: SandboxProcess, fcm_config: dict[str, Any], resolve: Any
):
    resolve(api_tenant_test=["127.0.0.1"])
    adapter, msg = build("sendgrid", f"http://{NAME}:{accepting.port}", sandbox, fcm_config)

    assert adapter.send(msg).outcome is Outcome.ACCEPTED  # urllib (SendGrid's client)
    with guarded_session() as session:  # requests (Twilio, pyfcm, google-auth)
        assert session.post(f"http://{NAME}:{accepting.port}/r", data=b"{}", timeout=5).status_code == 202

    assert [headers["Host"] for _, _, headers in accepting.requests] == [f"{NAME}:{accepting.port}"] * 2


# --- refusal at save --------------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("webhook_url", "http://169.254.169.254/latest/meta-data", "link-local"),
        ("webhook_url", "http://[64:ff9b::a9fe:a9fe]/hook", "NAT64"),
        ("chat_address", "https://[::ffff:127.0.0.1]:8080/services/T0/B0/x", "loopback"),
        ("chat_address", "http://10.0.0.5/hook", "private"),
    ],
)
def test_a_recipient_address_that_is_internal_is_refused_when_saved(api: Any, field: str, value: str, reason: str):
    answer = api.post("/api/v1/recipients/", {"external_id": "r-1", field: value}, format="json")

    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "validation_error"
    assert reason in " ".join(answer.json()["fields"][field])


@pytest.mark.django_db
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_bulk_upsert_refuses_only_the_internal_address(api: Any):
    """A chat channel is no URL, and a name that does not resolve yet is checked again at each send."""
    good = {"external_id": "r-1", "chat_address": "#deploys", "webhook_url": "https://hooks.nowhere.invalid/x"}
    bad = {"external_id": "r-2", "webhook_url": "http://[::ffff:a9fe:a9fe]/latest"}

    refused = api.post("/api/v1/recipients/bulk/", {"recipients": [good, bad]}, format="json")
    accepted = api.post("/api/v1/recipients/bulk/", {"recipients": [good]}, format="json")

    assert refused.status_code == 400, refused.json()
    assert list(refused.json()["fields"]["recipients"]) == ["1"]
    assert "link-local" in refused.json()["fields"]["recipients"]["1"]["webhook_url"][0]
    assert accepted.status_code == 200, accepted.json()


@pytest.mark.django_db
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
@pytest.mark.parametrize("provider", ["slack", "teams", "discord"])
def test_a_chat_config_with_an_internal_webhook_url_is_refused(api: Any, provider: str):
    body = {"name": "hook", "provider": provider, "secrets": {"webhook_url": "https://127.0.0.1:8443/hook"}}

    answer = api.post("/api/v1/providers/configs/", body, format="json")

    assert answer.status_code == 400, answer.json()
    assert "loopback" in " ".join(answer.json()["fields"]["webhook_url"])
    assert not ProviderConfig.objects.exists()


@pytest.mark.django_db
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_an_outbound_webhook_endpoint_on_a_translated_address_is_refused(api: Any):
    answer = api.post("/api/v1/webhook-endpoints/", {"url": "http://[2002:a9fe:a9fe::1]/hook"}, format="json")

    assert answer.status_code == 422
    assert answer.json()["code"] == "unsafe_url" and "6to4" in answer.json()["fields"]["url"][0]


def test_the_environment_providers_keep_their_own_transport(sandbox: SandboxProcess, monkeypatch: pytest.MonkeyPatch):
    """The operator's settings (`trusted`) may name a relay on localhost; only tenants' configs are guarded."""

    def refuse(host: str, port: int) -> list[str]:
        raise AssertionError("the guard was consulted for the environment's provider")

    monkeypatch.setattr(net, "resolver", refuse)
    smtp = SmtpProvider.from_config(sandbox_config_for(sandbox, "smtp"), trusted=True)

    with override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False):
        assert smtp.send(email()).outcome is Outcome.ACCEPTED
