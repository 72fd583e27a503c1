"""The flow engine: attaching a flow to a notification, starting its runs, moving runs through
their steps in chunks, waking them early, cancelling them, and recovering lost claims.

How a run moves (docs/flows.md, "Timing guarantees"):

- Runs are rows. `flow_start` inserts the audience's runs with one `INSERT … SELECT`.
- `flows_advance` claims due runs in chunks with one conditional `UPDATE … WHERE id IN (SELECT …
  FOR UPDATE SKIP LOCKED) RETURNING` that gives them a claim token and a lease, committed on its own.
  Each chunk's step effects (deliveries) and its moves (one `UPDATE … FROM unnest(…)` conditional on
  the token) then commit together. A worker killed in between commits nothing; the sweeper gives
  the runs back once the lease is over and the step runs again. A send step is idempotent anyway:
  a delivery is unique per (notification, recipient, channel) and inserted ON CONFLICT DO NOTHING.
- A delay or a waiting branch is a `due_at`; nothing is on the broker while a run waits. The
  dispatcher (beat, every few seconds) publishes `advance` when runs are due; steps due at once
  run in the same chunk (one claim, one write per run), and wake-ups publish it on commit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time as clock
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import signature
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from apps.core import cel
from apps.core.errors import ApplicationError, Conflict, Unprocessable
from apps.core.publish import publish_on_commit
from apps.flows import spec
from apps.flows.models import Flow, FlowInstance, FlowRun
from apps.notifications import hooks
from apps.notifications.models import Delivery, Notification, Recipient
from apps.notifications.selectors import engagement_kinds
from apps.notifications.services.digest import digest_rule_resolve
from apps.notifications.services.fanout import deliveries_create_for
from apps.notifications.services.notifications import (
    notification_cancel,
    notification_complete_if_settled,
    notification_lock,
    queue_for,
)
from apps.notifications.services.preferences import local_instant, zone
from apps.observability import metrics

log = logging.getLogger(__name__)

ADVANCE_TASK = "signalbox.flows.advance"
LEASE_SECONDS = 120
CHUNK_SIZE = 1000
BUDGET_SECONDS = 20.0
CANCEL_AT_ONCE = 10_000  # waiting runs a cancel ends in its own transaction; the sweeper ends the rest
OPEN = (FlowInstance.Status.PENDING, FlowInstance.Status.ACTIVE)
# Outcomes that may make a waiting branch true: a run watching them is woken at once.
WAKING_STATUSES = frozenset({"failed", "dead", "bounced", "suppressed", "delivered", "read"})
RUN_TABLE = FlowRun._meta.db_table
RECIPIENT_FIELDS = ("id", "external_id", "name", "email", "phone", "locale", "timezone", "data")


def _publish_advance(queue: str = "notifications.default", *, on_commit: bool = True) -> None:
    task = signature(ADVANCE_TASK)
    if on_commit:
        publish_on_commit(task, queue=queue)  # type: ignore[arg-type]
        return
    try:
        task.apply_async(queue=queue)
    except Exception:  # the dispatcher publishes again in a few seconds
        log.exception("publishing flows advance failed")


def _match_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# --- Attaching a flow to a notification (notification_create) ---------------------------------------


def flows_supported() -> None:
    """Flows move runs with PostgreSQL statements (jsonb, SKIP LOCKED, arrays): on the embedded
    default (SQLite) a flow is refused with 422 `flows_need_postgresql`; everything else runs."""
    if connection.vendor != "postgresql":
        raise Unprocessable(
            "Flows need PostgreSQL; the embedded default (SQLite) runs notifications without them.",
            code="flows_need_postgresql",
        )


def flow_plan(
    *,
    tenant: Any,
    key: str,
    template: str | None,
    content: Mapping[str, Any] | None,
    channels: Sequence[str] | None,
    payload: Mapping[str, Any],
) -> hooks.Plan:
    """The notifications planner: the flow's template and channels, and the instance to attach."""
    flows_supported()
    errors: dict[str, list[str]] = {}
    flow = (
        Flow.objects.filter(tenant=tenant, key=key, archived_at__isnull=True).select_related("current_version").first()
    )
    if flow is None or flow.current_version is None:
        raise ApplicationError(
            "The notification is invalid; nothing was sent. See fields.",
            code="validation_error",
            fields={"flow": [f"No flow {key!r}."]},
        )
    version = flow.current_version
    if channels is not None:
        errors["channels"] = ["A flow's steps choose the channels: leave `channels` out."]
    chosen = template or (version.template_key or None)
    if not chosen and content is None:
        errors["template"] = ["Give a template (the flow names none) or inline content."]
    cancel_value = ""
    if version.cancel_on:
        value = payload.get(version.cancel_on["key"])
        if value is None or isinstance(value, (dict, list)):
            errors["payload"] = [
                f"The flow ends on `{version.cancel_on['event_type']}` matched by `{version.cancel_on['key']}`: "
                f"give `payload.{version.cancel_on['key']}` (text or a number)."
            ]
        else:
            cancel_value = _match_value(value)[:500]
    if errors:
        raise ApplicationError(
            "The notification is invalid; nothing was sent. See fields.", code="validation_error", fields=errors
        )
    parsed_channels: list[str] = []
    for step in version.steps:
        if step["type"] == "send":
            parsed_channels.extend(c for c in step["channels"] if c not in parsed_channels)

    def attach(notification: Notification) -> None:
        FlowInstance.objects.create(
            notification=notification,
            tenant_id=notification.tenant_id,
            flow_version=version,
            cancel_event_type=(version.cancel_on or {}).get("event_type", ""),
            cancel_key=(version.cancel_on or {}).get("key", ""),
            cancel_value=cancel_value,
        )

    return hooks.Plan(template=chosen, channels=parsed_channels, attach=attach)


# --- Starting: the audience's runs --------------------------------------------------------------------


def flow_take_over(notification_id: Any) -> bool:
    """The fan-out hook: a notification with a flow starts its runs instead of fanning out."""
    if not FlowInstance.objects.filter(pk=notification_id).exists():
        return False
    flow_start(notification_id=notification_id)
    return True


def flow_start(*, notification_id: Any, now: datetime | None = None) -> int:
    """Inserts one run per recipient at the first step, due now, in one statement; the
    notification is `dispatched` (kept open by its flow). Returns the number of runs (0 when it
    was started already or is no longer accepted)."""
    now = now or timezone.now()
    with transaction.atomic():
        notification = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if notification is None or notification.status != Notification.Status.ACCEPTED:
            return 0
        instance = (
            FlowInstance.objects.select_related("flow_version__flow")
            .select_for_update(of=("self",))
            .get(pk=notification_id)
        )
        first = instance.flow_version.steps[0]["id"]
        columns = (
            "tenant_id, instance_id, notification_id, recipient_id, step, phase, status, due_at, watching, "
            "attempts, history, created_at, updated_at"
        )
        values = "%s, %s, %s, rid, %s, 'enter', 'waiting', %s, false, 0, '[]'::jsonb, %s, %s"
        common: list[Any] = [notification.tenant_id, notification.pk, notification.pk, first, now, now, now]
        recipient_table = Recipient._meta.db_table
        if notification.recipient_ids is not None:
            source = (
                f"SELECT r.id AS rid FROM unnest(%s::bigint[]) AS u(id) JOIN {recipient_table} r "  # noqa: S608
                "ON r.id = u.id AND r.tenant_id = %s"
            )
            params: list[Any] = [list(notification.recipient_ids), notification.tenant_id]
        elif notification.topic_id is not None:
            source = "SELECT recipient_id AS rid FROM notifications_topicmembership WHERE topic_id = %s"
            params = [notification.topic_id]
        else:
            source, params = "SELECT NULL::bigint AS rid WHERE false", []
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {RUN_TABLE} ({columns}) SELECT {values} FROM ({source}) audience "  # noqa: S608
                "ON CONFLICT DO NOTHING",
                [*common, *params],
            )
            count = cursor.rowcount
        Notification.objects.filter(pk=notification.pk).update(
            status=Notification.Status.DISPATCHED,
            recipient_count=count,
            fanout_started_at=now,
            dispatched_at=now,
            updated_at=now,
        )
        FlowInstance.objects.filter(pk=notification.pk).update(
            status=FlowInstance.Status.ACTIVE, started_at=now, recipient_count=count
        )
        if count:
            _publish_advance(queue_for(notification.priority))
    if not count:
        _finish_instances([notification.pk], now)
    metrics.FLOW_STEPS.labels(flow=instance.flow_version.flow.key, step="start", outcome="started").inc(count)
    return count


def flow_completion_filter() -> Q:
    """A notification completes only when no open flow instance is attached to it."""
    return Q(~Exists(FlowInstance.objects.filter(pk=OuterRef("pk"), status__in=OPEN)))


# --- Advancing -----------------------------------------------------------------------------------------


@dataclass
class Claimed:
    id: int
    instance_id: Any
    recipient_id: int
    step: str
    phase: str
    deadline_at: datetime | None


@dataclass
class Move:
    run_id: int
    step: str
    phase: str = FlowRun.Phase.ENTER
    status: str = FlowRun.Status.WAITING
    due_at: datetime | None = None
    deadline_at: datetime | None = None
    watching: bool = False
    entry: dict[str, Any] | None = None  # what this step adds to the run's history
    entries: list[dict[str, Any]] | None = None  # every entry of the chunk (steps run at once), once final


@dataclass
class AdvanceResult:
    claimed: int = 0
    chunks: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


def _claim(now: datetime, size: int, token: uuid.UUID) -> list[Claimed]:
    lease = now + timedelta(seconds=LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN_TABLE} SET status = 'running', claim_token = %s, lease_expires_at = %s, "  # noqa: S608
            f"attempts = attempts + 1 WHERE id IN (SELECT id FROM {RUN_TABLE} WHERE status = 'waiting' "
            "AND due_at <= %s ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            "RETURNING id, instance_id, recipient_id, step, phase, deadline_at",
            [token, max(lease, timezone.now() + timedelta(seconds=LEASE_SECONDS)), now, size],
        )
        return [Claimed(*row) for row in cursor.fetchall()]


def flows_advance(
    *, now: datetime | None = None, chunk_size: int = CHUNK_SIZE, budget_seconds: float = BUDGET_SECONDS
) -> AdvanceResult:
    """Runs due steps chunk after chunk until none is due or the time budget is spent (then it
    publishes itself again). `now`: the clock the steps see (a test moves it forward)."""
    started = clock.monotonic()
    result = AdvanceResult()
    touched: set[Any] = set()
    while True:
        at = now or timezone.now()
        token = uuid.uuid4()
        claimed = _claim(at, chunk_size, token)
        if claimed:
            result.claimed += len(claimed)
            result.chunks += 1
            touched.update(_run_chunk(claimed, at, token, result))
        over = clock.monotonic() - started > budget_seconds
        if not claimed or over:
            # Whether an instance has ended is asked once per call, not once per chunk: the
            # question reads the instance's runs, and would grow with every chunk of a large one.
            _finish_instances(list(touched), at)
            if claimed:
                _publish_advance(on_commit=False)
            return result


def _run_chunk(claimed: list[Claimed], now: datetime, token: uuid.UUID, result: AdvanceResult) -> list[Any]:
    """Runs a chunk's steps and writes its moves in one transaction; the instances it touched.

    A run that moves to a step due at once (a delay that is over, then its send; a send, then a
    branch) goes on in the same chunk: one claim and one write per run, whatever the number of
    steps it passes (flows run forward only, so this ends within the flow's number of steps)."""
    by_instance: dict[Any, list[Claimed]] = defaultdict(list)
    for run in claimed:
        by_instance[run.instance_id].append(run)
    instances = {
        i.pk: i
        for i in FlowInstance.objects.filter(pk__in=list(by_instance)).select_related(
            "flow_version__flow",
            "notification__tenant",
            "notification__category",
            "notification__template",
            "notification__template_version",
        )
    }
    counted: Counter[tuple[str, str, str]] = Counter()
    with transaction.atomic():
        moves: list[Move] = []
        for instance_id, runs in by_instance.items():
            moves += _run_instance(instances[instance_id], runs, now, counted)
        _apply(moves, token, now)
    for (flow_key, step_id, outcome), n in counted.items():
        metrics.FLOW_STEPS.labels(flow=flow_key, step=step_id, outcome=outcome).inc(n)
        result.outcomes[outcome] += n
    return list(by_instance)


def _run_instance(
    instance: FlowInstance, runs: list[Claimed], now: datetime, counted: Counter[tuple[str, str, str]]
) -> list[Move]:
    """One instance's runs of a chunk, step after step while they are due at once; their final
    moves, each carrying the history entries of every step it passed."""
    notification = instance.notification
    if notification.status == Notification.Status.CANCELLED or instance.status == FlowInstance.Status.CANCELLED:
        return _end_all(runs, now, "cancelled", "the notification was cancelled")
    steps = spec.step_map(instance.flow_version.steps)
    flow_key = instance.flow_version.flow.key
    passed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    final: list[Move] = []
    for _ in range(len(steps) + 1):
        if not runs:
            break
        groups: dict[tuple[str, str], list[Claimed]] = defaultdict(list)
        for run in runs:
            groups[(run.step, run.phase)].append(run)
        by_id = {run.id: run for run in runs}
        runs = []
        for (step_id, phase), group in groups.items():
            step = steps.get(step_id)
            if step is None:  # not in this version (never happens for a saved version)
                made = _end_all(group, now, "failed", f"no step {step_id!r}")
            else:
                made = _STEPS[step["type"]](instance, steps, step, phase, group, now)
            for move in made:
                counted[(flow_key, step_id, (move.entry or {}).get("event", "waiting"))] += 1
                if move.entry:
                    passed[move.run_id].append(move.entry)
                if _due_at_once(move, now):
                    run = by_id[move.run_id]
                    runs.append(Claimed(run.id, run.instance_id, run.recipient_id, move.step, move.phase, None))
                else:
                    final.append(move)
    final += [Move(r.id, r.step, r.phase, due_at=now) for r in runs]  # only on a bug: written as due
    for move in final:
        move.entries = passed.get(move.run_id, [])
    return final


def _due_at_once(move: Move, now: datetime) -> bool:
    return (
        move.status == FlowRun.Status.WAITING
        and move.phase == FlowRun.Phase.ENTER
        and move.due_at is not None
        and move.due_at <= now
    )


def _apply(moves: list[Move], token: uuid.UUID, now: datetime) -> int:
    """Writes every move of a chunk in one statement, only for runs this claim still holds. The
    moves go as one JSON document (`jsonb_to_recordset`): much cheaper to send than arrays."""
    if not moves:
        return 0
    finals = [FlowRun.Status.DONE, FlowRun.Status.CANCELLED, FlowRun.Status.FAILED]
    rows = [
        {
            "id": m.run_id,
            "step": m.step,
            "phase": m.phase,
            "status": m.status,
            "due_at": m.due_at.isoformat() if m.due_at else None,
            "deadline_at": m.deadline_at.isoformat() if m.deadline_at else None,
            "watching": m.watching,
            "entries": m.entries if m.entries is not None else ([m.entry] if m.entry else []),
        }
        for m in moves
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN_TABLE} AS r SET step = v.step, phase = v.phase, status = v.status, "  # noqa: S608
            "due_at = v.due_at, deadline_at = v.deadline_at, watching = v.watching, lease_expires_at = NULL, "
            "claim_token = NULL, updated_at = %s, history = r.history || v.entries, "
            "finished_at = CASE WHEN v.status = ANY(%s) THEN %s::timestamptz ELSE NULL END "
            "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, step text, phase text, status text, "
            "due_at timestamptz, deadline_at timestamptz, watching boolean, entries jsonb) "
            "WHERE r.id = v.id AND r.claim_token = %s",
            [now, finals, now, json.dumps(rows, default=str), token],
        )
        return cursor.rowcount


def _entry(step_id: str, now: datetime, event: str, **detail: Any) -> dict[str, Any]:
    return {"step": step_id, "at": now.isoformat(), "event": event, **detail}


def _end_all(runs: Iterable[Claimed], now: datetime, status: str, why: str) -> list[Move]:
    return [Move(r.id, r.step, r.phase, status=status, entry=_entry(r.step, now, status, why=why)) for r in runs]


def _goto(run: Claimed, target: str | None, now: datetime, entry: dict[str, Any]) -> Move:
    if target is None:
        return Move(run.id, run.step, run.phase, status=FlowRun.Status.DONE, entry={**entry, "to": None})
    return Move(run.id, target, due_at=now, entry={**entry, "to": target})


# --- The steps ---------------------------------------------------------------------------------------


def _step_send(
    instance: FlowInstance,
    steps: dict[str, dict[str, Any]],
    step: dict[str, Any],
    phase: str,
    runs: list[Claimed],
    now: datetime,
) -> list[Move]:
    notification = instance.notification
    # Serializes with notification_cancel (and a cancel event): either the cancel sees these
    # deliveries and cancels what is not sent yet, or this step sees the cancel and sends nothing.
    notification_lock(notification.pk)
    current = Notification.objects.filter(pk=notification.pk).values_list("status", flat=True).get()
    state = FlowInstance.objects.filter(pk=instance.pk).values_list("status", flat=True).get()
    if current == Notification.Status.CANCELLED or state == FlowInstance.Status.CANCELLED:
        return _end_all(runs, now, "cancelled", "the notification was cancelled")
    digest = None
    previous = next((s for s in steps.values() if s["type"] == "digest" and s.get("next") == step["id"]), None)
    if previous is not None:
        digest = digest_rule_resolve(
            rule={"key": previous["key"], "window_minutes": previous["window_minutes"]},
            scope=f"flow:{instance.flow_version.flow.key}",
            payload=notification.payload or {},
        )
    recipient_ids = [r.recipient_id for r in runs]
    deliveries_create_for(
        notification=notification, recipient_ids=recipient_ids, channels=step["channels"], digest=digest, now=now
    )
    made: dict[int, dict[str, str]] = defaultdict(dict)
    for recipient_id, channel, status, reason in Delivery.objects.filter(
        notification_id=notification.pk, recipient_id__in=recipient_ids, channel__in=step["channels"]
    ).values_list("recipient_id", "channel", "status", "suppression_reason"):
        made[recipient_id][channel] = f"{status}:{reason}" if reason else status
    return [_goto(r, step["next"], now, _entry(step["id"], now, "sent", deliveries=made[r.recipient_id])) for r in runs]


def _local_next(at: str, tz_name: str, now: datetime) -> datetime:
    wanted = datetime.strptime(at, "%H:%M").time()
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    candidate = local_instant(today, wanted, tz)
    return candidate if candidate > now else local_instant(today + timedelta(days=1), wanted, tz)


def _step_delay(
    instance: FlowInstance,
    steps: dict[str, dict[str, Any]],
    step: dict[str, Any],
    phase: str,
    runs: list[Claimed],
    now: datetime,
) -> list[Move]:
    if phase == FlowRun.Phase.WAIT:  # the delay is over
        return [_goto(r, step["next"], now, _entry(step["id"], now, "released")) for r in runs]
    if step.get("duration"):
        due = now + timedelta(seconds=step["duration"])
        return [
            Move(
                r.id,
                step["id"],
                FlowRun.Phase.WAIT,
                due_at=due,
                entry=_entry(step["id"], now, "delayed", until=due.isoformat()),
            )
            for r in runs
        ]
    zones = dict(Recipient.objects.filter(pk__in=[r.recipient_id for r in runs]).values_list("pk", "timezone"))
    moves = []
    for r in runs:
        due = _local_next(step["until"], zones.get(r.recipient_id, ""), now)
        moves.append(
            Move(
                r.id,
                step["id"],
                FlowRun.Phase.WAIT,
                due_at=due,
                entry=_entry(step["id"], now, "delayed", until=due.isoformat()),
            )
        )
    return moves


def _step_digest(
    instance: FlowInstance,
    steps: dict[str, dict[str, Any]],
    step: dict[str, Any],
    phase: str,
    runs: list[Claimed],
    now: datetime,
) -> list[Move]:
    """The window itself is the digest pipeline's: the following send files its deliveries in it."""
    entry = _entry(step["id"], now, "digest", window_minutes=step["window_minutes"])
    return [_goto(r, step["next"], now, entry) for r in runs]


def _step_exit(
    instance: FlowInstance,
    steps: dict[str, dict[str, Any]],
    step: dict[str, Any],
    phase: str,
    runs: list[Claimed],
    now: datetime,
) -> list[Move]:
    return [Move(r.id, step["id"], status=FlowRun.Status.DONE, entry=_entry(step["id"], now, "exit")) for r in runs]


def _delivery_states(
    notification_id: Any, recipient_ids: list[int], channel: str, states: list[str]
) -> dict[int, set[str]]:
    """Each recipient's states of its delivery on `channel`, read from the rows (the truth)."""
    found: dict[int, set[str]] = {rid: {"missing"} for rid in recipient_ids}
    delivery_of: dict[Any, int] = {}
    for pk, rid, status, read_at, seen_at in Delivery.objects.filter(
        notification_id=notification_id, recipient_id__in=recipient_ids, channel=channel
    ).values_list("pk", "recipient_id", "status", "read_at", "seen_at"):
        have = {status}
        if status in ("sent", "delivered", "read"):
            have.add("sent")
        if status in ("delivered", "read"):
            have.add("delivered")
        if read_at is not None:
            have.add("read")
        if seen_at is not None:
            have.add("seen")
        found[rid] = have
        delivery_of[pk] = rid
    wanted = {"opened": "open", "clicked": "click"}
    kinds = [wanted[s] for s in states if s in wanted]
    for delivery_id, kind in engagement_kinds(delivery_ids=list(delivery_of), kinds=kinds):
        found[delivery_of[delivery_id]].add("opened" if kind == "open" else "clicked")
    return found


def _step_branch(
    instance: FlowInstance,
    steps: dict[str, dict[str, Any]],
    step: dict[str, Any],
    phase: str,
    runs: list[Claimed],
    now: datetime,
) -> list[Move]:
    notification = instance.notification
    condition = step["if"]
    ids = [r.recipient_id for r in runs]
    truth: dict[int, bool] = {}
    why: dict[int, str] = {}
    if "cel" in condition:
        recipients = {row["id"]: row for row in Recipient.objects.filter(pk__in=ids).values(*RECIPIENT_FIELDS)}
        for rid in ids:
            variables = {"payload": notification.payload or {}, "recipient": recipients.get(rid, {})}
            try:
                truth[rid] = cel.evaluate_condition(condition["cel"], variables)
                why[rid] = f"{condition['cel']} is {str(truth[rid]).lower()}"
            except cel.CelError as exc:
                truth[rid], why[rid] = False, f"{condition['cel']}: {exc.message}"
    else:
        states = _delivery_states(notification.pk, ids, condition["channel"], condition["state"])
        for rid in ids:
            hit = sorted(set(condition["state"]) & states[rid])
            truth[rid] = bool(hit)
            shown = ", ".join(sorted(states[rid]))
            why[rid] = f"{condition['channel']} is {shown}" + (f" (matches {', '.join(hit)})" if hit else "")
    moves = []
    wait = step.get("wait")
    for run in runs:
        if truth[run.recipient_id]:
            moves.append(
                _goto(
                    run, step["then"], now, _entry(step["id"], now, "branched", result=True, why=why[run.recipient_id])
                )
            )
        elif wait and phase == FlowRun.Phase.ENTER:
            deadline = now + timedelta(seconds=wait)
            moves.append(
                Move(
                    run.id,
                    step["id"],
                    FlowRun.Phase.WAIT,
                    due_at=deadline,
                    deadline_at=deadline,
                    watching=True,
                    entry=_entry(step["id"], now, "waiting", why=why[run.recipient_id], until=deadline.isoformat()),
                )
            )
        elif wait and run.deadline_at is not None and now < run.deadline_at:  # woken early, not true yet
            moves.append(
                Move(
                    run.id,
                    step["id"],
                    FlowRun.Phase.WAIT,
                    due_at=run.deadline_at,
                    deadline_at=run.deadline_at,
                    watching=True,
                )
            )
        else:
            moves.append(
                _goto(
                    run, step["else"], now, _entry(step["id"], now, "branched", result=False, why=why[run.recipient_id])
                )
            )
    return moves


_STEPS = {
    "send": _step_send,
    "delay": _step_delay,
    "digest": _step_digest,
    "branch": _step_branch,
    "exit": _step_exit,
}


# --- Finishing ------------------------------------------------------------------------------------------


def _finish_instances(instance_ids: Sequence[Any], now: datetime) -> int:
    """Instances with no run left open end (cancelled if their notification was); their
    notification then completes once its deliveries have settled."""
    ended = 0
    for instance_id in instance_ids:
        if FlowRun.objects.filter(instance_id=instance_id, status__in=FlowRun.ACTIVE).exists():
            continue
        row = (
            FlowInstance.objects.filter(pk=instance_id, status__in=OPEN)
            .values_list("tenant_id", "notification__status")
            .first()
        )
        if row is None:
            continue
        tenant_id, notification_status = row
        final = (
            FlowInstance.Status.CANCELLED
            if notification_status == Notification.Status.CANCELLED
            else FlowInstance.Status.FINISHED
        )
        if FlowInstance.objects.filter(pk=instance_id, status__in=OPEN).update(status=final, finished_at=now):
            ended += 1
            notification_complete_if_settled(notification_id=instance_id, tenant_id=tenant_id)
    return ended


# --- Waking and cancelling ------------------------------------------------------------------------------


def flows_wake(delivery_ids: Sequence[Any]) -> int:
    """Makes the watching runs of these deliveries' recipients due now (a read, a bounce): their
    branch is evaluated again at once instead of at its deadline. One statement."""
    if not delivery_ids:
        return 0
    if connection.vendor != "postgresql":  # no flow runs there (flows_supported): nothing to wake
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN_TABLE} AS r SET due_at = now() FROM {Delivery._meta.db_table} AS d "  # noqa: S608
            "WHERE d.id = ANY(%s::uuid[]) AND r.notification_id = d.notification_id "
            "AND r.recipient_id = d.recipient_id AND r.status = 'waiting' AND r.watching AND r.due_at > now()",
            [[str(pk) for pk in delivery_ids]],
        )
        woken = cursor.rowcount
    if woken:
        _publish_advance()
    return woken


def flows_on_inbox_read(delivery_ids: Sequence[Any]) -> None:
    flows_wake(delivery_ids)


def flows_on_engagement(delivery_ids: Sequence[Any]) -> None:
    flows_wake(delivery_ids)


def flows_on_event(event: Any) -> None:
    flows_cancel_for_event(event)


def flows_on_outcomes(outcomes: Sequence[tuple[Any, str]]) -> None:
    flows_wake([pk for pk, status in outcomes if str(status) in WAKING_STATUSES])


def flows_cancel_for_event(event: Any) -> int:
    """The events port: ends the flows whose `cancel_on` matches this client event (same type,
    same value of the key in both payloads), cancelling their notifications."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    candidates = FlowInstance.objects.filter(tenant_id=event.tenant_id, cancel_event_type=event.type, status__in=OPEN)
    keys = set(candidates.values_list("cancel_key", flat=True).distinct())
    match = Q(pk__in=[])
    for key in keys:
        value = payload.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            match |= Q(cancel_key=key, cancel_value=_match_value(value)[:500])
    cancelled = 0
    for instance in candidates.filter(match).select_related("notification"):
        flow_instance_cancel(
            instance=instance, reason=f"event {event.type} ({instance.cancel_key}={instance.cancel_value})"
        )
        cancelled += 1
    return cancelled


def flow_instance_cancel(*, instance: FlowInstance, reason: str) -> None:
    """Ends the instance and cancels its notification (what is not sent yet stays unsent); its
    runs end at once where they wait (the sweeper ends the rest in chunks)."""
    now = timezone.now()
    with transaction.atomic():
        # The notification's lock first, as notification_cancel and a send step take it.
        notification_lock(instance.pk)
        FlowInstance.objects.filter(pk=instance.pk, status__in=OPEN).update(
            status=FlowInstance.Status.CANCELLED, cancel_reason=reason[:500], finished_at=now
        )
        _cancel_waiting_runs(instance_ids=[instance.pk], now=now, why=reason, limit=CANCEL_AT_ONCE)
        with contextlib.suppress(Conflict):  # already over: nothing left to stop
            notification_cancel(notification=instance.notification)


def flows_on_cancelled(notification_id: Any) -> None:
    """The notifications hook: a notification was cancelled (the API, the admin): its flow ends,
    and its waiting runs end at once, the first CANCEL_AT_ONCE of them; the sweeper ends the
    rest. Runs under way see the cancel at their next step and end there."""
    now = timezone.now()
    if not FlowInstance.objects.filter(pk=notification_id).exists():
        return
    FlowInstance.objects.filter(pk=notification_id, status__in=OPEN).update(
        status=FlowInstance.Status.CANCELLED, cancel_reason="the notification was cancelled", finished_at=now
    )
    _cancel_waiting_runs(
        instance_ids=[notification_id], now=now, why="the notification was cancelled", limit=CANCEL_AT_ONCE
    )


def _cancel_waiting_runs(*, instance_ids: Sequence[Any] | None, now: datetime, why: str, limit: int) -> int:
    if connection.vendor != "postgresql":  # no flow runs there (flows_supported)
        return 0
    entry = json.dumps([{"step": None, "at": now.isoformat(), "event": "cancelled", "why": why}])
    if instance_ids is not None:
        scope, params = "instance_id = ANY(%s::uuid[])", [[str(i) for i in instance_ids]]
    else:
        instances = FlowInstance._meta.db_table
        scope, params = f"instance_id IN (SELECT notification_id FROM {instances} WHERE status = 'cancelled')", []  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN_TABLE} SET status = 'cancelled', finished_at = %s, updated_at = %s, "  # noqa: S608
            "history = history || %s::jsonb, watching = false WHERE id IN (SELECT id FROM "
            f"{RUN_TABLE} WHERE status = 'waiting' AND {scope} LIMIT %s FOR UPDATE SKIP LOCKED)",
            [now, now, entry, *params, limit],
        )
        return cursor.rowcount


# --- Dispatcher and sweeper -----------------------------------------------------------------------------


def flows_dispatch_due(*, now: datetime | None = None) -> int:
    """Beat, every few seconds: publishes `advance` when runs are due (one message, whatever their
    number: the task takes them in chunks)."""
    now = now or timezone.now()
    due = FlowRun.objects.filter(status=FlowRun.Status.WAITING, due_at__lte=now).exists()
    if due:
        _publish_advance(on_commit=False)
    return int(due)


@dataclass
class SweepResult:
    leases: int = 0
    cancelled: int = 0
    finished: int = 0


def flows_sweep(*, now: datetime | None = None, limit: int = 10_000) -> SweepResult:
    """Gives back runs whose claim's lease ran out (their worker died: the step runs again), ends
    the waiting runs of cancelled flows and notifications, and ends instances with no open run."""
    now = now or timezone.now()
    result = SweepResult()
    entry = json.dumps([{"step": None, "at": now.isoformat(), "event": "recovered", "why": "lease expired"}])
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN_TABLE} SET status = 'waiting', claim_token = NULL, lease_expires_at = NULL, "  # noqa: S608
            "due_at = LEAST(%s, now()), history = history || %s::jsonb WHERE id IN (SELECT id FROM "
            f"{RUN_TABLE} WHERE status = 'running' AND lease_expires_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
            [now, entry, now, limit],
        )
        result.leases = cursor.rowcount
    # A notification cancelled through the API: its flow ends too.
    for instance_id in FlowInstance.objects.filter(
        status__in=OPEN, notification__status=Notification.Status.CANCELLED
    ).values_list("pk", flat=True)[:100]:
        FlowInstance.objects.filter(pk=instance_id, status__in=OPEN).update(
            status=FlowInstance.Status.CANCELLED, cancel_reason="the notification was cancelled", finished_at=now
        )
    result.cancelled = _cancel_waiting_runs(instance_ids=None, now=now, why="the flow was cancelled", limit=limit)
    active = list(FlowInstance.objects.filter(status=FlowInstance.Status.ACTIVE).values_list("pk", flat=True)[:500])
    result.finished = _finish_instances(active, now)
    if result.leases:
        metrics.SWEEPER_RECOVERED.labels(kind="flow_runs").inc(result.leases)
        _publish_advance(on_commit=False)
    return result


def step_counts(*, instance: FlowInstance) -> dict[str, dict[str, int]]:
    """{step id: {run status: count}} for one instance."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for step_id, status, n in _count_rows(instance):
        counts[step_id][status] = n
    return dict(counts)


def _count_rows(instance: FlowInstance) -> list[tuple[str, str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT step, status, count(*) FROM {RUN_TABLE} WHERE instance_id = %s GROUP BY step, status",  # noqa: S608
            [instance.pk],
        )
        return [(s, st, int(n)) for s, st, n in cursor.fetchall()]
