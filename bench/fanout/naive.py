"""The naive baseline: one Celery task per delivery, each saving its row with the ORM one by one.

This is how a first version is often written (a loop in the request publishing a task per
recipient and channel); it goes through the same renderer and channel adapter as the real
pipeline, so the difference measured is the shape of the work, not the work itself.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="bench.naive.deliver", queue="notifications.default", ignore_result=True)
def naive_deliver(notification_id: str, recipient_id: int, channel: str) -> None:
    # Imported here: the worker loads this module before Django is set up.
    from django.utils import timezone

    from apps.notifications import channels as registry
    from apps.notifications.models import Delivery, DeliveryAttempt, Notification, Recipient
    from apps.notifications.services.content import NotificationRenderer, message_metadata

    notification = Notification.objects.select_related("tenant", "template", "template_version", "category").get(
        pk=notification_id
    )
    recipient = Recipient.objects.get(pk=recipient_id)
    delivery = Delivery(
        tenant_id=notification.tenant_id,
        notification=notification,
        recipient=recipient,
        channel=channel,
        status=Delivery.Status.QUEUED,
        template_version=notification.template_version,
    )
    delivery.save()
    rendered = {
        "to": registry.address_for(channel, recipient),
        **NotificationRenderer(notification).render(channel, recipient),
    }
    adapter = registry.chain_for(channel, notification.tenant)[0]
    message = registry.message_build(
        delivery_id=str(delivery.pk),
        tenant_id=str(notification.tenant_id),
        channel=channel,
        to=rendered["to"],
        rendered=rendered,
        metadata=message_metadata(notification, delivery_id=str(delivery.pk), attempt=1),
    )
    result = adapter.send(message)
    delivery.status = Delivery.Status.DELIVERED if channel == "in_app" else Delivery.Status.SENT
    delivery.provider, delivery.provider_message_id, delivery.rendered = adapter.name, result.message_id, rendered
    delivery.attempts, delivery.sent_at = 1, timezone.now()
    delivery.save()
    if channel != "in_app":
        DeliveryAttempt(
            delivery=delivery, number=1, provider=adapter.name, outcome=result.outcome.value, latency_ms=0
        ).save()
