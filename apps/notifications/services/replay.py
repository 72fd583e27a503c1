"""Dead letters: replaying failed and dead deliveries, one or many, from the API and admin.

The replay itself is `sending.deliveries_replay`: one transaction that locks the rows and
moves only those still `failed` or `dead` to `pending` with a fresh retry budget. Two replays
racing on one delivery therefore cannot both take it (the second finds it `pending` and skips
it), and the claim before send makes sure the dispatcher's message is sent once. Bounced
deliveries (the address is on the suppression list) and suppressed ones are not replayable.

The API replays at most `MAX_REPLAY` deliveries per call; larger sets go through the tracked
task `signalbox.notifications.resend_deliveries` (apps/notifications/jobs/resend.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import Conflict, NotFound
from apps.notifications import selectors
from apps.notifications.models import Delivery
from apps.notifications.services.sending import deliveries_replay

REPLAYABLE = (Delivery.Status.FAILED, Delivery.Status.DEAD)
MAX_REPLAY = 1000


@dataclass
class ReplayResult:
    matched: int = 0  # failed or dead when selected
    replayed: int = 0  # taken by this call (a concurrent replay may have taken some first)


def delivery_replay(*, tenant: Any, delivery_id: Any, actor: Actor = SYSTEM) -> Delivery:
    """Replays one failed or dead delivery; Conflict when it is in another status (already replayed)."""
    delivery = Delivery.objects.filter(tenant=tenant, pk=delivery_id).first()
    if delivery is None:
        raise NotFound("No such delivery.", code="not_found")
    if not deliveries_replay(tenant_id=tenant.pk, delivery_ids=[delivery.pk], actor=actor):
        delivery.refresh_from_db()
        raise Conflict(
            f"Only failed or dead deliveries can be replayed; this one is {delivery.status}.", code="not_replayable"
        )
    delivery.refresh_from_db()
    return delivery


def _matching(tenant: Any, filters: Mapping[str, Any]) -> QuerySet[Delivery]:
    """Only failed and dead deliveries replay, whatever statuses the filter names."""
    statuses = [s for s in (filters.get("status") or REPLAYABLE) if s in REPLAYABLE]
    if not statuses:
        return Delivery.objects.none()
    return selectors.deliveries_filtered(
        tenant_id=tenant.pk,
        status=statuses,
        channel=filters.get("channel"),
        notification=filters.get("notification"),
        error_code=filters.get("error_code"),
        created_after=filters.get("created_after"),
        created_before=filters.get("created_before"),
    )


def deliveries_replay_bulk(
    *,
    tenant: Any,
    ids: Sequence[Any] | None = None,
    filters: Mapping[str, Any] | None = None,
    limit: int = MAX_REPLAY,
    actor: Actor = SYSTEM,
) -> ReplayResult:
    """Replays the tenant's failed and dead deliveries among `ids`, or matching `filters`
    (status, channel, notification, error_code, created_after/before), at most `limit`."""
    limit = max(1, min(limit, MAX_REPLAY))
    candidates: QuerySet[Delivery]
    if ids is not None:
        candidates = Delivery.objects.filter(tenant=tenant, pk__in=list(ids), status__in=REPLAYABLE)
    else:
        candidates = _matching(tenant, filters or {})
    chosen = [str(pk) for pk in candidates.values_list("pk", flat=True)[:limit]]
    result = ReplayResult(matched=len(chosen))
    if not chosen:
        return result
    result.replayed = deliveries_replay(tenant_id=tenant.pk, delivery_ids=chosen, actor=actor)
    return result
