"""SMTP batches through the real send pipeline (in this process) into the sandbox's SMTP server:
one connection and one record for the batch, each acceptance noted in the sent-message journal
before the next message, so a worker killed mid-batch re-sends nothing the relay had accepted
(SMTP has no idempotency key); a refused recipient fails its delivery alone; without a journal
each message is recorded as soon as the server answers it."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.notifications.models import Delivery, DeliveryAttempt, Notification
from apps.notifications.services.dispatch import dispatch_due, sweep
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.sending import deliveries_send
from apps.providers import journal
from apps.providers.adapters import smtp
from apps.providers.adapters.smtp import PipeliningEmailBackend
from apps.providers.email import DELIVERY_HEADER
from apps.providers.services import provider_config_create
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import count_smtp_connections, sandbox_config_for
from tests.reliability.conftest import assert_delivered_once, far_future, people, sandbox_counts, send

pytestmark = pytest.mark.django_db


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: nothing in the pipeline catches it, as nothing could catch the real one."""


@pytest.fixture
def smtp_tenant(tenant: Any, sandbox: SandboxProcess) -> Any:
    """The acme tenant with one email provider: SMTP to the sandbox."""
    options = sandbox_config_for(sandbox, "smtp", timeout=2)
    provider_config_create(tenant=tenant, name="relay", provider="smtp", options=options)
    return tenant


def queued(tenant: Any, n: int) -> tuple[Notification, list[str]]:
    notification = send(tenant, people(n), ["email"])
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    ids = Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True)
    return notification, [str(pk) for pk in ids]


def on_each_smtp_send(monkeypatch: pytest.MonkeyPatch, before: Callable[[str], None]) -> None:
    """Calls `before(delivery_id)` just before each message is handed to the SMTP server."""
    send_raw = PipeliningEmailBackend.send_raw
    delivery_header = re.compile(rb"^" + DELIVERY_HEADER.encode() + rb": *(\S+)", re.MULTILINE)

    def wrapped(self: PipeliningEmailBackend, from_email: str, to: str, raw: bytes) -> None:
        found = delivery_header.search(raw)
        assert found is not None
        before(found.group(1).decode())
        send_raw(self, from_email, to, raw)

    monkeypatch.setattr(PipeliningEmailBackend, "send_raw", wrapped)


def test_a_batch_goes_over_one_connection_each_acceptance_noted_before_the_next_and_is_recorded_once(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given five queued emails and an SMTP relay
    _, ids = queued(smtp_tenant, 5)
    connections = count_smtp_connections(monkeypatch)
    handed: list[str] = []
    unnoted: list[int] = []  # per message: how many handed over before it were not yet noted as accepted
    recorded: list[int] = []  # per message: how many of the batch were recorded when it was handed over

    def before(delivery_id: str) -> None:
        unnoted.append(len(handed) - len(journal.accepted("smtp", handed)))
        recorded.append(Delivery.objects.filter(pk__in=ids, status="sent").count())
        handed.append(delivery_id)

    on_each_smtp_send(monkeypatch, before)

    # When the batch is sent
    summary = deliveries_send(delivery_ids=ids)

    # Then each went out once, over one connection, noted before the next; the batch was recorded
    # after its last message, with an attempt each, and the notes are gone once recorded
    assert summary.statuses == {"sent": 5}
    assert sorted(handed) == sorted(ids)
    assert unnoted == [0, 0, 0, 0, 0]
    assert recorded == [0, 0, 0, 0, 0]
    assert len(connections) == 1
    assert dict(sandbox_counts(sandbox_client)) == dict.fromkeys(ids, 1)
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids, outcome="accepted", provider="smtp").count() == 5
    assert journal.accepted("smtp", ids) == {}


def test_a_refused_recipient_fails_its_delivery_alone_in_a_batch(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given five queued emails, one to an address the relay refuses at RCPT TO
    _, ids = queued(smtp_tenant, 5)
    sandbox_client.add_fault("smtp", 550, match="p-2@example.com")
    connections = count_smtp_connections(monkeypatch)

    # When the batch is sent
    summary = deliveries_send(delivery_ids=ids)

    # Then that one failed for good with the relay's answer, the four others were sent, over one connection
    assert summary.statuses == {"sent": 4, "failed": 1}
    [refused] = Delivery.objects.filter(pk__in=ids, status="failed")
    assert refused.recipient.email == "p-2@example.com" and refused.error_code == "550"
    assert sorted(m["recipient"] for m in sandbox_client.messages("smtp")) == sorted(
        f"p-{i}@example.com" for i in (0, 1, 3, 4)
    )
    assert len(connections) == 1


def test_without_a_journal_each_message_is_recorded_as_answered(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given five queued emails, and a Redis that does not answer
    _, ids = queued(smtp_tenant, 5)
    monkeypatch.setattr(journal, "available", lambda: False)
    connections = count_smtp_connections(monkeypatch)
    handed: list[str] = []
    unrecorded: list[int] = []

    def before(delivery_id: str) -> None:
        unrecorded.append(len(handed) - Delivery.objects.filter(pk__in=handed, status="sent").count())
        handed.append(delivery_id)

    on_each_smtp_send(monkeypatch, before)

    # When the batch is sent
    summary = deliveries_send(delivery_ids=ids)

    # Then each message was its own request, recorded before the next, still over one connection
    assert summary.statuses == {"sent": 5}
    assert unrecorded == [0, 0, 0, 0, 0]
    assert len(connections) == 1


def test_a_worker_killed_mid_batch_does_not_resend_what_the_relay_accepted(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given five queued emails, and a worker that dies as it hands over the third
    notification, ids = queued(smtp_tenant, 5)
    handed: list[str] = []

    def die_at_the_third(delivery_id: str) -> None:
        if len(handed) == 2:
            raise WorkerKilled
        handed.append(delivery_id)

    on_each_smtp_send(monkeypatch, die_at_the_third)

    # When the batch is sent
    with pytest.raises(WorkerKilled):
        deliveries_send(delivery_ids=ids)

    # Then nothing is recorded (the batch's record comes after its last message), every row is
    # marked in flight to the relay, and the two it accepted are noted in the journal
    rows = list(Delivery.objects.filter(pk__in=ids).values_list("status", "in_flight_provider"))
    assert rows == [("sending", "smtp")] * 5
    assert sorted(journal.accepted("smtp", ids)) == sorted(handed)

    # And when the sweeper takes the lost claims back and they are sent again
    monkeypatch.undo()
    sweep(now=far_future())
    dispatch_due(now=far_future() + timedelta(minutes=5))
    again = list(Delivery.objects.filter(pk__in=ids, status="queued").values_list("pk", flat=True))
    assert sorted(map(str, again)) == sorted(ids)
    deliveries_send(delivery_ids=again)
    sweep(now=timezone.now())

    # Then every email reached the relay exactly once: the two accepted ones were answered from the journal
    assert assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0) == {"sent": 5}
    assert set(sandbox_counts(sandbox_client).values()) == {1}
    from_journal = DeliveryAttempt.objects.filter(
        delivery_id__in=ids, outcome="accepted", error__startswith="Accepted by an earlier"
    )
    assert sorted(str(a.delivery_id) for a in from_journal) == sorted(handed)
    assert journal.accepted("smtp", ids) == {}


class Handed:
    """Messages handed to the SMTP server by every connection's thread, with, at each hand-over,
    how many handed earlier were not yet noted in the journal."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[str] = []
        self.unnoted: list[int] = []

    def before(self, delivery_id: str) -> None:
        with self.lock:
            handed = list(self.ids)
        unnoted = len(handed) - len(journal.accepted("smtp", handed))
        with self.lock:
            self.unnoted.append(unnoted)
            self.ids.append(delivery_id)


def test_a_large_batch_goes_over_several_connections_each_noting_before_its_next_message(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given 200 queued emails and an SMTP relay
    _, ids = queued(smtp_tenant, 200)
    connections = count_smtp_connections(monkeypatch)
    handed = Handed()
    on_each_smtp_send(monkeypatch, handed.before)

    # When the batch is sent
    summary = deliveries_send(delivery_ids=ids)

    # Then it went over DEFAULT_CONNECTIONS connections, each email once; at each hand-over at most
    # one message per other connection was accepted and not yet noted; all recorded, notes gone
    assert summary.statuses == {"sent": 200}
    assert len(connections) == smtp.DEFAULT_CONNECTIONS
    assert sorted(handed.ids) == sorted(ids)
    assert max(handed.unnoted) <= smtp.DEFAULT_CONNECTIONS - 1
    assert dict(sandbox_counts(sandbox_client)) == dict.fromkeys(ids, 1)
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids, outcome="accepted", provider="smtp").count() == 200
    assert journal.accepted("smtp", ids) == {}


def test_a_refused_recipient_fails_alone_in_a_batch_over_several_connections(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given 120 queued emails, one to an address the relay refuses at RCPT TO
    _, ids = queued(smtp_tenant, 120)
    sandbox_client.add_fault("smtp", 550, match="p-57@example.com")
    connections = count_smtp_connections(monkeypatch)

    # When the batch is sent
    summary = deliveries_send(delivery_ids=ids)

    # Then that one failed with the relay's answer and every other was sent once, its
    # connection going on after the refusal
    assert summary.statuses == {"sent": 119, "failed": 1}
    assert len(connections) == smtp.DEFAULT_CONNECTIONS
    [refused] = Delivery.objects.filter(pk__in=ids, status="failed")
    assert refused.recipient.email == "p-57@example.com" and refused.error_code == "550"
    assert len(sandbox_client.messages("smtp")) == 119
    assert set(sandbox_counts(sandbox_client).values()) == {1}


def test_a_worker_killed_mid_batch_over_several_connections_resends_nothing_the_relay_accepted(
    smtp_tenant: Any, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given 120 queued emails over several connections, and a worker that dies as one of its
    # connections hands over the 50th message
    notification, ids = queued(smtp_tenant, 120)
    handed: list[str] = []
    lock = threading.Lock()

    def die_at_the_fiftieth(delivery_id: str) -> None:
        with lock:
            if len(handed) >= 49:
                raise WorkerKilled
            handed.append(delivery_id)

    on_each_smtp_send(monkeypatch, die_at_the_fiftieth)

    # When the batch is sent
    with pytest.raises(WorkerKilled):
        deliveries_send(delivery_ids=ids)

    # Then nothing is recorded, every row is in flight to the relay, and what it accepted is noted
    rows = set(Delivery.objects.filter(pk__in=ids).values_list("status", "in_flight_provider"))
    assert rows == {("sending", "smtp")}
    accepted = {m["idempotency_key"] for m in sandbox_client.messages("smtp")}
    assert accepted == set(handed) and len(accepted) == 49
    assert set(journal.accepted("smtp", ids)) == accepted

    # And when the sweeper takes the lost claims back and they are sent again
    monkeypatch.undo()
    sweep(now=far_future())
    dispatch_due(now=far_future() + timedelta(minutes=5))
    again = list(Delivery.objects.filter(pk__in=ids, status="queued").values_list("pk", flat=True))
    assert sorted(map(str, again)) == sorted(ids)
    deliveries_send(delivery_ids=again)
    sweep(now=timezone.now())

    # Then every email reached the relay exactly once, the 49 accepted ones answered from the journal
    assert assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0) == {"sent": 120}
    assert set(sandbox_counts(sandbox_client).values()) == {1}
    from_journal = DeliveryAttempt.objects.filter(
        delivery_id__in=ids, outcome="accepted", error__startswith="Accepted by an earlier"
    )
    assert {str(a.delivery_id) for a in from_journal} == accepted
    assert journal.accepted("smtp", ids) == {}
