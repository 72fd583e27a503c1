"""The channel adapters this app ships: the in-app inbox, and the sinks that stand in for providers.

Real providers (SendGrid, SMTP, Twilio, FCM, Slack, webhooks) live in apps/providers and are
plugged in through `SIGNALBOX_CHANNEL_PROVIDERS` (see channels.py). Every adapter has the
`apps.providers.base.Provider` shape: `name`, `channel`, `send(Message) -> SendResult`, and may add:

- `send_batch(messages) -> list[SendResult]`: one call for many messages (same order);
- `inline = True`: it has no side effect outside our database, so fan-out completes its
  deliveries in the fan-out transaction instead of queueing them;
- `confirms_delivery = True`: acceptance means the message is at its destination (`delivered`);
- `accepts_all = True` (an inline adapter only), with `message_id_for(delivery_id) -> str`: it
  accepts every message and answers with that id, so fan-out writes the answer for a chunk's rows
  without building a message per row;
- `records_attempts = False`: nothing external was tried, so no DeliveryAttempt rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from apps.notifications.models import SinkRecord
from apps.providers.base import Channel, Message, Outcome, SendResult


class InAppAdapter:
    """The in-app inbox. An in-app Delivery is the inbox item: it becomes visible when its status
    becomes `delivered`, which happens exactly once (the fan-out insert, or the conditional
    result update of a claimed row), so this adapter has nothing to write itself."""

    name = "in_app"
    channel = Channel.IN_APP
    inline = True
    accepts_all = True
    confirms_delivery = True
    records_attempts = False

    def message_id_for(self, delivery_id: str) -> str:
        return delivery_id

    def send(self, message: Message) -> SendResult:
        return SendResult.ok(self.name, message_id=self.message_id_for(message.idempotency_key))

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        return [self.send(m) for m in messages]


class SinkAdapter:
    """Accepts every message and sends nothing: the default for external channels until a real
    provider is configured, and the benchmark's provider.

    For tests and demos it can play out failures: a notification whose metadata holds
    `{"sink_outcomes": ["transient", "accepted"]}` gets those outcomes on attempts 1, 2, …
    (the last one repeats); `"transient:30"` adds `retry_after=30`.
    """

    name = "sink"
    channel: Channel | None = None  # any channel
    inline = False
    confirms_delivery = False
    records_attempts = True

    def _scripted(self, message: Message) -> SendResult | None:
        script = (message.metadata.get("notification_metadata") or {}).get("sink_outcomes")
        if not script or not isinstance(script, list):
            return None
        attempt = int(message.metadata.get("attempt") or 1)
        step = str(script[min(attempt, len(script)) - 1])
        kind, _, retry_after = step.partition(":")
        if kind == Outcome.TRANSIENT:
            return SendResult.transient(
                self.name, "scripted transient failure", code="scripted", retry_after=float(retry_after or 0) or None
            )
        if kind == Outcome.PERMANENT:
            return SendResult.permanent(self.name, "scripted permanent failure", code="scripted", status_code=400)
        return None

    def send(self, message: Message) -> SendResult:
        return self._scripted(message) or SendResult.ok(self.name, message_id=f"sink-{message.idempotency_key}")

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        return [self.send(m) for m in messages]


class RecordingSinkAdapter(SinkAdapter):
    """A sink that keeps what it was given in the SinkRecord table, so a test (or a developer) can
    see every message exactly as a provider would have received it."""

    name = "recording_sink"
    fields: ClassVar[tuple[str, ...]] = (
        "subject",
        "text",
        "html",
        "title",
        "data",
        "headers",
        "reply_to",
        "metadata",
        "recipient_id",
        "category",
        "list_unsubscribe",
        "track_opens",
        "track_clicks",
    )

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        results = [self._result(m) for m in messages]
        SinkRecord.objects.bulk_create(
            [
                SinkRecord(
                    delivery_id=m.idempotency_key,
                    tenant_id=m.tenant_id,
                    channel=str(m.channel),
                    to=m.to,
                    message=self._as_json(m),
                )
                for m, r in zip(messages, results, strict=True)
                if r.accepted
            ]
        )
        return results

    def send(self, message: Message) -> SendResult:
        return self.send_batch([message])[0]

    def _result(self, message: Message) -> SendResult:
        return self._scripted(message) or SendResult.ok(self.name, message_id=f"rec-{message.idempotency_key}")

    @classmethod
    def _as_json(cls, message: Message) -> dict[str, Any]:
        return {name: getattr(message, name) for name in cls.fields}
