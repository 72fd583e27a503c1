"""The SSRF guard: internal addresses are refused, the checked address is the one connected to,
and the Host header and TLS SNI still name the real host."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apps.core.net import PinnedAddressAdapter, UnresolvableHost, UnsafeUrl, resolve_public_address, safe_post
from apps.events.models import WebhookMessage
from apps.events.services.events import event_record
from apps.events.services.processing import event_process
from apps.events.services.webhooks import endpoint_create, message_deliver

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.10/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",  # reserved
    ],
)
def test_internal_addresses_are_refused(url):
    with pytest.raises(UnsafeUrl):
        resolve_public_address(url, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.com/", "/relative", "http://user:pw@93.184.216.34/", "http://[::1"])
def test_malformed_urls_and_credentials_are_refused(url):
    with pytest.raises(UnsafeUrl):
        resolve_public_address(url, allow_private=False)


def test_a_public_address_resolves_to_ip_host_and_port():
    assert resolve_public_address("https://93.184.216.34/hook", allow_private=False) == (
        "93.184.216.34",
        "93.184.216.34",
        443,
    )
    assert resolve_public_address("http://93.184.216.34:8080/", allow_private=False)[2] == 8080


def test_a_name_that_does_not_resolve_is_its_own_error():
    with pytest.raises(UnresolvableHost):
        resolve_public_address("http://no-such-host.invalid/", allow_private=False)


def test_the_setting_lets_private_addresses_through_but_never_multicast(settings):
    settings.SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = True
    assert resolve_public_address("http://127.0.0.1:9000/")[0] == "127.0.0.1"
    with pytest.raises(UnsafeUrl):
        resolve_public_address("http://224.0.0.1/")


def test_registering_an_internal_url_is_refused_by_the_api(api, settings):
    settings.SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = False

    response = api.post("/api/v1/webhook-endpoints/", {"url": "http://169.254.169.254/latest"}, format="json")

    assert response.status_code == 422
    assert response.json()["code"] == "unsafe_url"
    assert "link-local" in response.json()["fields"]["url"][0]


def test_delivery_rechecks_the_address_and_refuses_without_connecting(tenant, receiver, settings):
    endpoint, _ = endpoint_create(tenant=tenant, url=receiver.url())  # allowed when registered (tests allow private)
    event = event_record(tenant=tenant, type="order.paid", payload={})
    event_process(event_id=str(event.pk))
    settings.SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = False  # e.g. the name now resolves somewhere internal

    message = WebhookMessage.objects.get(endpoint=endpoint)
    outcome = message_deliver(message_id=message.pk)

    assert outcome == "refused"
    message.refresh_from_db()
    assert message.status == "failed" and "loopback" in message.last_error
    assert receiver.requests == []


def test_the_pinned_adapter_connects_to_the_checked_address_whatever_the_name(receiver):
    """The name does not resolve at all: only the pinned address can have been used."""
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", PinnedAddressAdapter(ip="127.0.0.1", host="hooks.example.invalid"))
        response = session.post(
            f"http://hooks.example.invalid:{receiver.port}/pinned",
            data=b"{}",
            timeout=5,
        )

    assert response.status_code == 200
    [received] = receiver.requests
    assert received.path == "/pinned"
    assert received.headers["host"] == f"hooks.example.invalid:{receiver.port}"


def test_safe_post_sends_the_real_host_header(receiver, settings):
    settings.SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = True

    response, content = safe_post(f"http://localhost:{receiver.port}/h", body=b"{}", headers={}, timeout=5)

    assert response.status_code == 200 and content == b"answered 200"
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An HTTPS server on 127.0.0.1 with a certificate for hooks.example.test only; records the SNI."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    seen: dict[str, Any] = {"sni": [], "hosts": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["hosts"].append(self.headers["Host"])
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, server_name, ctx: seen["sni"].append(server_name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"port": server.server_address[1], "ca": str(cert_file), "seen": seen}
    server.shutdown()
    server.server_close()


def test_tls_uses_the_real_host_for_sni_and_certificate_checks(tls_server):
    port, ca = tls_server["port"], tls_server["ca"]
    with requests.Session() as session:
        session.trust_env = False
        session.mount("https://", PinnedAddressAdapter(ip="127.0.0.1", host="hooks.example.test"))
        response = session.post(f"https://hooks.example.test:{port}/", data=b"{}", verify=ca, timeout=5)

        assert response.status_code == 204
        assert tls_server["seen"]["sni"] == ["hooks.example.test"]
        assert tls_server["seen"]["hosts"] == [f"hooks.example.test:{port}"]

        # A certificate for another name is refused, although the address is the same.
        session.mount("https://", PinnedAddressAdapter(ip="127.0.0.1", host="other.example.test"))
        with pytest.raises(requests.exceptions.SSLError):
            session.post(f"https://other.example.test:{port}/", data=b"{}", verify=ca, timeout=5)
