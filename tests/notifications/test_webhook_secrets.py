"""A recipient's own webhook signing secret: made and shown once through the API, stored encrypted,
and used instead of the provider's shared secret, so one receiver cannot sign for another."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.notifications.models import Delivery, Recipient
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.sending import deliveries_send
from apps.observability.models import AuditEntry
from apps.providers.services import provider_config_create
from tests.events.receiver import Receiver

pytestmark = pytest.mark.django_db

SHARED = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK = {"default": {"webhook": {"body": {"order": "{{ order_id }}"}}}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def send_webhook(tenant: Any, make_template: Any, external_id: str) -> None:
    make_template(default_channels=["webhook"], content=HOOK)
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "A-1"}, recipients=[external_id]
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    deliveries_send(delivery_ids=list(Delivery.objects.filter(status="queued").values_list("pk", flat=True)))


@pytest.fixture
def hooked(api: Any, tenant: Any, receiver: Receiver) -> Recipient:
    provider_config_create(tenant=tenant, name="hooks", provider="webhook", secrets={"signing_secret": SHARED})
    created = api.post("/api/v1/recipients/", {"external_id": "acme-erp", "webhook_url": receiver.url()}, format="json")
    assert created.status_code == 201, created.json()
    return Recipient.objects.get(external_id="acme-erp")


def test_the_secret_is_shown_once_and_kept_encrypted(api, hooked):
    answer = api.post("/api/v1/recipients/acme-erp/webhook-secret/")

    assert answer.status_code == 201
    secret = answer.json()["secret"]
    assert secret.startswith("whsec_")
    hooked.refresh_from_db()
    assert hooked.webhook_secret_encrypted and secret not in hooked.webhook_secret_encrypted
    shown = api.get("/api/v1/recipients/acme-erp/").json()
    assert shown["has_webhook_secret"] is True and secret not in str(shown)
    assert AuditEntry.objects.filter(action="recipient.webhook_secret_set", target_id=str(hooked.pk)).exists()


def test_its_webhooks_are_signed_with_its_own_secret_not_the_shared_one(api, tenant, hooked, make_template, receiver):
    secret = api.post("/api/v1/recipients/acme-erp/webhook-secret/").json()["secret"]

    send_webhook(tenant, make_template, "acme-erp")

    [received] = receiver.requests
    assert Webhook(secret).verify(received.body, received.headers) == {"order": "A-1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SHARED).verify(received.body, received.headers)


def test_without_one_or_after_delete_the_shared_secret_signs(api, tenant, hooked, make_template, receiver):
    api.post("/api/v1/recipients/acme-erp/webhook-secret/")
    assert api.delete("/api/v1/recipients/acme-erp/webhook-secret/").status_code == 204

    send_webhook(tenant, make_template, "acme-erp")

    [received] = receiver.requests
    assert Webhook(SHARED).verify(received.body, received.headers) == {"order": "A-1"}
    assert api.get("/api/v1/recipients/acme-erp/").json()["has_webhook_secret"] is False


def test_another_tenant_cannot_touch_the_secret(other_api, hooked):
    assert other_api.post("/api/v1/recipients/acme-erp/webhook-secret/").status_code == 404
    hooked.refresh_from_db()
    assert hooked.webhook_secret_encrypted == ""
