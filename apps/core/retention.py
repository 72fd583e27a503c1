"""Retention purges: bounded, resumable range deletes of rows past their tenant's retention.

Each purgeable table is described once by a `RetentionPolicy`: which model, which timestamp, which
rows it covers (`scope`) and which are still needed and must never go (`keep`, `keep_at`: in
flight, scheduled, waiting for a digest, inside an idempotency or dedup window). The purge walks
tenants, computes the cutoff from the tenant's retention (`tenant.settings["retention_days"]
[policy.name]`, else `SIGNALBOX_RETENTION_DAYS[policy.name]`, else the policy's default; never
younger than `min_age`), and deletes in batches of primary keys:

- each batch (`SIGNALBOX_RETENTION_BATCH_SIZE` rows) is selected through the `(tenant, <time>)`
  index in time order, `FOR UPDATE SKIP LOCKED` (a row a writer holds is left for the next run;
  two purges never wait on each other), re-checked against `keep` under the lock, and deleted in
  its own short transaction — one statement per table, the ids as one array: no long locks, no
  table rewrite, nothing held between batches;
- the walk resumes from the last batch's time, so rows kept (in flight) are read once per run,
  not once per batch;
- killed at any point, a batch either happened or did not: rerunning continues.

A dry run counts what would go. With export (the call's `export=True`, or the tenant's
`settings["retention_export"]`), each batch is first written as JSON lines to Django's default
storage, one file per table: the policy's rows in `retention-exports/<tenant>/<policy>/<stamp>-<n>.jsonl`
and the rows deleted with them (a delivery's attempts and digest item, an event's rule executions,
webhook messages and their attempts) beside it in `<stamp>-<n>.<app>.<model>.jsonl`, all in the
same transaction as the delete: a batch rolled back after its files were written is exported again
by the next run (at least once). Rows purged are counted in `signalbox_rows_purged_total{table}`
(cascaded rows under their own model label: the observability app listens with `on_rows_purged`)
and in the report.

Core knows no table of its own accord: each app registers its policies from its `AppConfig.ready()`
(`register_retention_policies`), and the tenancy app tells the purge who the tenants are
(`register_tenants`). The hourly `signalbox.maintenance.purge` runs the policies registered for the
shared purge; a policy its app purges with its own beat job is registered with `shared_purge=False`
and is still listed (dry runs, operator runs: `signalbox.maintenance.retention_purge`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.db.models import signals
from django.db.models.deletion import CASCADE, DO_NOTHING, SET_NULL
from django.utils import timezone

from apps.core.conf import core_settings

log = logging.getLogger(__name__)


def _no_tenants() -> Iterable[Any]:
    return []


_tenants: Callable[[], Iterable[Any]] = _no_tenants


def register_tenants(source: Callable[[], Iterable[Any]]) -> None:
    """Called once by the tenancy app's `ready()`: how the purge lists every tenant."""
    global _tenants
    _tenants = source


def all_tenants() -> Iterable[Any]:
    """Every tenant, as the tenancy app lists them (none before it registers)."""
    return _tenants()


_purged_listeners: list[Callable[[str, int], None]] = []


def on_rows_purged(listener: Callable[[str, int], None]) -> None:
    """`listener(table, rows)` after each batch; the observability app's `ready()` counts them."""
    if listener not in _purged_listeners:
        _purged_listeners.append(listener)


def announce_purged(table: str, rows: int) -> None:
    for listener in _purged_listeners:
        listener(table, rows)


def _nothing() -> models.Q:
    return models.Q(pk__in=[])


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    model: Callable[[], type[models.Model]]
    time_field: str = "created_at"
    default_days: int = 30
    # Rows matching this are still needed (queued, sending, scheduled, in an idempotency window).
    keep: Callable[[], models.Q] = field(default=_nothing)
    # The same, for rules that depend on the time of the run (a dedup window measured from now).
    keep_at: Callable[[datetime], models.Q] | None = None
    # The rows this policy covers, when a table is shared by several policies (inbox vs. other deliveries).
    scope: Callable[[], models.Q] | None = None
    # Never purge rows younger than this, whatever a tenant's retention says.
    min_age: Callable[[], timedelta] | None = None
    # False: one pass over the whole table with the settings' retention (rows without a tenant).
    per_tenant: bool = True
    description: str = ""


@dataclass
class PurgeReport:
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)
    cascaded: dict[str, int] = field(default_factory=dict)
    exported: dict[str, list[str]] = field(default_factory=dict)
    complete: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "cascaded": self.cascaded,
            "exported": self.exported,
            "complete": self.complete,
            "seconds": self.seconds,
        }


@dataclass
class PolicyResult:
    rows: int = 0
    cascaded: Counter[str] = field(default_factory=Counter)
    exported: list[str] = field(default_factory=list)
    complete: bool = True


def default_batch_size() -> int:
    """Rows per batch (`SIGNALBOX_RETENTION_BATCH_SIZE`): a writer updating a row being purged
    waits at most one batch, so smaller batches mean shorter waits (see docs/benchmarks.md)."""
    return core_settings().retention_batch_size


def tenant_retention_days(tenant: Any, name: str) -> int | None:
    """The tenant's `settings["retention_days"][name]` when it is a whole number of days >= 1, else None.

    A bad value (`-3`, `"abc"`) is logged and ignored: it must neither purge everything of that
    tenant at once nor stop the purge of the others. Shared by the retention policies and by task
    executions (`task_results`, `task_dead`), so every retention setting is read the same way.
    """
    raw = ((tenant.settings or {}).get("retention_days") or {}).get(name) if tenant else None
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if not (isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1):
        log.warning(
            "ignoring an invalid retention_days setting",
            extra={"tenant": str(getattr(tenant, "pk", "")), "policy": name, "value": repr(raw)[:50]},
        )
        return None
    return int(raw)


def retention_days(tenant: Any, policy: RetentionPolicy) -> int:
    """The tenant's valid `settings["retention_days"][policy]`, else the settings' or the policy's default."""
    defaults = core_settings().retention_days
    own = tenant_retention_days(tenant, policy.name)
    return own if own is not None else int(defaults.get(policy.name, policy.default_days))


def retention_cutoff(tenant: Any, policy: RetentionPolicy, now: datetime) -> datetime:
    cutoff = now - timedelta(days=retention_days(tenant, policy))
    if policy.min_age is not None:
        cutoff = min(cutoff, now - policy.min_age())
    return cutoff


def _expired(policy: RetentionPolicy, tenant: Any, now: datetime) -> models.QuerySet[Any]:
    model = policy.model()
    rows = model._default_manager.filter(**{f"{policy.time_field}__lt": retention_cutoff(tenant, policy, now)})
    if policy.per_tenant:
        rows = rows.filter(tenant=tenant)
    if policy.scope is not None:
        rows = rows.filter(policy.scope())
    rows = rows.exclude(policy.keep())
    if policy.keep_at is not None:
        rows = rows.exclude(policy.keep_at(now))
    return rows


def _cascaded_rows(rows: models.QuerySet[Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows that deleting `rows` deletes with them (CASCADE relations, followed down), children
    first, by model label: what an export must hold besides the policy's own rows."""
    found: dict[str, list[dict[str, Any]]] = {}
    for relation in rows.model._meta.related_objects:
        related: Any = relation.related_model
        if relation.on_delete is not CASCADE or relation.many_to_many or isinstance(related, str):
            continue
        children = related._default_manager.filter(**{f"{relation.field.name}__in": rows}).order_by("pk")
        values = list(children.values())
        if not values:
            continue
        for label, deeper in _cascaded_rows(children).items():
            found.setdefault(label, []).extend(deeper)
        found.setdefault(related._meta.label_lower, []).extend(values)
    return found


def _export(policy: RetentionPolicy, tenant: Any, batch: models.QuerySet[Any], stamp: str, number: int) -> list[str]:
    """Writes the batch as JSON lines, one file per table: the cascaded rows first, the policy's own last."""
    owner = getattr(tenant, "slug", None) or "_platform"
    base = f"retention-exports/{owner}/{policy.name}/{stamp}-{number:06d}"
    files = {f"{base}.{label}.jsonl": rows for label, rows in _cascaded_rows(batch).items()}
    files[f"{base}.jsonl"] = list(batch.values())
    paths = []
    for path, rows in files.items():
        body = "".join(json.dumps(row, cls=DjangoJSONEncoder) + "\n" for row in rows)
        paths.append(default_storage.save(path, ContentFile(body.encode())))
    return paths


def _direct_plan(model: type[models.Model]) -> list[tuple[Any, str]] | None:
    """How to delete `model` rows with one statement per table: [(relation, "cascade"|"set_null")],
    or None when some relation needs Django's collector (a protected or deeper cascade, signals)."""
    if any(s.has_listeners(model) for s in (signals.pre_delete, signals.post_delete)):
        return None
    plan: list[tuple[Any, str]] = []
    for relation in model._meta.related_objects:
        related = relation.related_model
        if isinstance(related, str) or relation.many_to_many or not relation.field.concrete:
            return None
        if relation.on_delete is DO_NOTHING:
            continue
        if relation.on_delete is SET_NULL:
            plan.append((relation, "set_null"))
            continue
        if relation.on_delete is not CASCADE:
            return None
        if any(s.has_listeners(related) for s in (signals.pre_delete, signals.post_delete)):
            return None
        if any(r.on_delete is not DO_NOTHING for r in related._meta.related_objects):
            return None  # its rows have dependents of their own: the collector walks them
        plan.append((relation, "cascade"))
    return plan


def _delete(model: type[models.Model], ids: list[Any], batch: models.QuerySet[Any]) -> dict[str, int]:
    """Deletes the rows (and what cascades from them); returns {model label: rows}.

    With only simple relations (a cascade to leaf tables, SET_NULL), one statement per table
    with the ids as one array; otherwise Django's collector, which is correct for anything
    but sends a statement per 100 rows and per relation.
    """
    plan = _direct_plan(model)
    if plan is None:
        return dict(batch.only("pk").delete()[1])
    counts: dict[str, int] = {}
    pk_column = model._meta.pk.column
    with connection.cursor() as cursor:
        for relation, action in plan:
            related: Any = relation.related_model
            table, column = related._meta.db_table, relation.field.column
            if action == "cascade":
                cursor.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", [ids])  # noqa: S608
                counts[related._meta.label] = counts.get(related._meta.label, 0) + cursor.rowcount
            else:
                cursor.execute(f"UPDATE {table} SET {column} = NULL WHERE {column} = ANY(%s)", [ids])  # noqa: S608
        cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE {pk_column} = ANY(%s)", [ids])  # noqa: S608
        counts[model._meta.label] = cursor.rowcount
    return counts


def purge_policy(
    policy: RetentionPolicy,
    *,
    tenants: Iterable[Any],
    batch_size: int | None = None,
    dry_run: bool = False,
    export: bool = False,
    now: datetime | None = None,
    max_seconds: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Deletes one table's expired rows for the given tenants; returns (rows, last export path).

    Kept for the callers that only need the count; `purge_policy_run` returns the details.
    """
    result = purge_policy_run(
        policy,
        tenants=tenants,
        batch_size=batch_size,
        dry_run=dry_run,
        export=export,
        now=now,
        max_seconds=max_seconds,
        on_batch=on_batch,
    )
    return result.rows, (result.exported[-1] if result.exported else "")


def purge_policy_run(
    policy: RetentionPolicy,
    *,
    tenants: Iterable[Any],
    batch_size: int | None = None,
    dry_run: bool = False,
    export: bool = False,
    now: datetime | None = None,
    max_seconds: float | None = None,
    deadline: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PolicyResult:
    """One table, tenant by tenant (or in one pass for a policy that is not per tenant).

    `max_seconds` (or an absolute `deadline` on `time.monotonic()`) bounds the run; what is left
    goes at the next run (`complete` is then False). `on_batch(rows)` is called after each batch
    (progress, cancellation).
    """
    now = now or timezone.now()
    batch_size = batch_size or default_batch_size()
    if deadline is None and max_seconds is not None:
        deadline = time.monotonic() + max_seconds
    stamp = now.strftime("%Y%m%dT%H%M%S")
    result = PolicyResult()
    model = policy.model()
    owners: Iterable[Any] = tenants if policy.per_tenant else [None]
    for tenant in owners:
        expired = _expired(policy, tenant, now)
        if dry_run:
            result.rows += expired.count()
            continue
        wants_export = export or bool(tenant is not None and (tenant.settings or {}).get("retention_export"))
        since: Any = None
        number = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                result.complete = False
                return result
            with transaction.atomic():
                window = expired if since is None else expired.filter(**{f"{policy.time_field}__gte": since})
                picked = list(
                    window.select_for_update(skip_locked=True, of=("self",))
                    .order_by(policy.time_field, "pk")
                    .values_list("pk", policy.time_field)[:batch_size]
                )
                if not picked:
                    break
                ids = [pk for pk, _ in picked]
                batch = model._default_manager.filter(pk__in=ids)
                if wants_export:
                    number += 1
                    result.exported.extend(_export(policy, tenant, batch, stamp, number))
                per_model = _delete(model, ids, batch)
            since = picked[-1][1]
            own = per_model.pop(model._meta.label, 0)
            result.rows += own
            announce_purged(policy.name, own)
            for label, count in per_model.items():
                if count:
                    result.cascaded[label] += count
                    announce_purged(label.lower(), count)
            if on_batch is not None:
                on_batch(own)
            if len(picked) < batch_size:
                break
    return result


def purge(
    policies: Iterable[RetentionPolicy],
    *,
    dry_run: bool = False,
    export: bool = False,
    batch_size: int | None = None,
    now: datetime | None = None,
    max_seconds: float | None = None,
    tenants: Iterable[Any] | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> PurgeReport:
    """Runs each policy in order (children before parents), within `max_seconds` for the whole run.

    `tenants` None: every tenant (`all_tenants()`).
    """
    report = PurgeReport(dry_run=dry_run)
    started = time.monotonic()
    deadline = started + max_seconds if max_seconds is not None else None
    owners = list(tenants) if tenants is not None else list(all_tenants())
    now = now or timezone.now()
    for policy in policies:
        if not policy.per_tenant and tenants is not None:
            continue  # a whole-table policy is not one tenant's to run
        callback = (lambda rows, name=policy.name: on_batch(name, rows)) if on_batch is not None else None
        result = purge_policy_run(
            policy,
            tenants=owners,
            batch_size=batch_size,
            dry_run=dry_run,
            export=export,
            now=now,
            deadline=deadline,
            on_batch=callback,
        )
        report.deleted[policy.name] = result.rows
        for label, count in result.cascaded.items():
            report.cascaded[label] = report.cascaded.get(label, 0) + count
        if result.exported:
            report.exported[policy.name] = result.exported
        if not result.complete:
            report.complete = False
            break
    report.seconds = round(time.monotonic() - started, 3)
    return report


# --- The registry: each app's policies ---------------------------------------------------------


@dataclass(frozen=True)
class _Registered:
    policy: RetentionPolicy
    shared_purge: bool


_REGISTRY: dict[str, _Registered] = {}


def register_retention_policies(policies: Iterable[RetentionPolicy], *, shared_purge: bool = True) -> None:
    """Called from an app's `ready()` with its policies, children before parents.

    `shared_purge=False`: the app purges them with its own beat job; they are only listed here (dry
    runs and operator runs). A policy registered again under its name replaces the first.
    """
    for policy in policies:
        _REGISTRY[policy.name] = _Registered(policy, shared_purge)


def retention_policies() -> list[RetentionPolicy]:
    """Every registered policy: the shared purge's (per tenant, then whole-table passes), then the others.

    Within each group, the order the apps registered them (INSTALLED_APPS order, children before
    parents within an app).
    """
    entries = sorted(_REGISTRY.values(), key=lambda e: (not e.shared_purge, not e.policy.per_tenant))
    return [entry.policy for entry in entries]


def shared_purge_policies() -> list[RetentionPolicy]:
    """The policies `signalbox.maintenance.purge` runs every hour."""
    shared = {name for name, entry in _REGISTRY.items() if entry.shared_purge}
    return [policy for policy in retention_policies() if policy.name in shared]


def retention_policy_names() -> list[str]:
    return [policy.name for policy in retention_policies()]
