"""Monthly range partitions of the largest history tables, on PostgreSQL (docs/partitions.md).

A table is partitioned by a UUIDv7 column (`key`): the first 48 bits of a UUIDv7 are its creation
time in milliseconds, so the bounds of a month are two UUIDs (`uuid7_floor(month start)`) and a
row's partition is fixed by a value it already has: no extra column, no trigger, and a unique
constraint that contains the key (deliveries: `(notification, recipient, channel)`, keyed by the
notification's id) is enforced exactly as before, because a re-run computes the same key and meets
the same partition's unique index.

- `partitions_ensure` (beat, `signalbox.maintenance.partitions`) keeps `SIGNALBOX_PARTITIONS_AHEAD`
  months ahead and a DEFAULT partition, so an insert never fails; rows that reached DEFAULT before
  their month existed are moved into it when it is created (`ATTACH`, which takes no lock that
  blocks writers of the parent).
- `partitions_drop_expired` (run by the hourly purge before its batched DELETE, or by an app's own
  purge for the tables it registered with `shared_purge=False`) drops a partition once every row
  in it is past the longest retention any tenant has for the table (and not kept: in flight, in a
  dedup window), with its companions' partitions of the same month (its rows' children in other
  tables). It locks the parent tables against writes, checks again, detaches and drops in one
  short transaction (`lock_timeout`: a busy table is retried next run). A partition still holding a
  kept row stays; its expired rows go by the batched DELETE, as do those of tenants whose retention
  is shorter than the longest (apps/core/retention.py). Export (`retention_export`) never drops:
  it needs the rows, so the batched DELETE (which exports) does it.

On SQLite (`make run`) tables are plain and every function here does nothing. Each app registers
its tables from `AppConfig.ready()` (`register_partitioned_tables`); core knows none of them.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps as django_apps
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.core.conf import core_settings
from apps.core.retention import all_tenants, announce_purged, retention_days, retention_policies

log = logging.getLogger(__name__)

_BOUND = re.compile(r"FOR VALUES FROM \('([0-9a-f-]{36})'\) TO \('([0-9a-f-]{36})'\)")


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond: `key >= uuid7_floor(t)` is "created at or after t"."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=(millis & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (0x2 << 62))


def month_start(moment: datetime, *, add: int = 0) -> datetime:
    """The first instant (UTC) of `moment`'s month, `add` months later."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 + add
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Partition:
    name: str
    lower: uuid.UUID | None = None  # None: the DEFAULT partition
    upper: uuid.UUID | None = None

    @property
    def is_default(self) -> bool:
        return self.lower is None


@dataclass(frozen=True)
class PartitionedTable:
    """One partitioned table, as its app registers it."""

    table: str
    label: str  # the model ("notifications.delivery"): rows dropped are counted under it
    key: str  # the UUIDv7 column it is partitioned by
    # The retention policies that purge its rows: a partition may go once past the longest of them.
    policies: tuple[str, ...]
    # Does the key range [lower, upper) still hold a row that must stay at `now`? Rows created at
    # or after `horizon` (now minus the longest retention) always stay; this adds the rest (in
    # flight, in a dedup window, a parent row still there). May read the whole partition: called
    # without a lock, so writers never wait for it.
    in_use: Callable[[uuid.UUID, uuid.UUID, datetime, datetime], bool]
    # The same question, asked again with the partition locked against writes, about what a write
    # could have changed since `in_use` answered (a row put back in flight, a late fan-out): it must
    # be answered from indexes in milliseconds, because writers of the table wait meanwhile.
    # None: `in_use` again.
    recheck: Callable[[uuid.UUID, uuid.UUID, datetime, datetime], bool] | None = None
    # Deletes the rows of other tables that go with this partition's rows (what CASCADE did). Runs
    # under the lock, after the recheck, before the companions' partitions are dropped.
    before_drop: Callable[[Partition], dict[str, int]] | None = None
    # Registered tables whose rows with their own key in this partition's range [lower, upper) are
    # children of this partition's rows and go with it, in the same transaction (events: their rule
    # executions and webhook messages by `event_id`, and the attempts of messages made in the same
    # month by `message_id`, which `in_use` makes sure belong to these events). Locked with this
    # table; their partition of the same bounds is dropped with this one, or where they have none
    # (the rows are in their DEFAULT) those rows are deleted.
    companions: tuple[str, ...] = ()


_TABLES: dict[str, PartitionedTable] = {}
_SHARED: set[str] = set()


def register_partitioned_tables(tables: Iterable[PartitionedTable], *, shared_purge: bool = True) -> None:
    """Called from an app's `ready()`, children after parents (a parent's drop makes its children's possible).

    `shared_purge=False`: the app drops them from its own purge job (`partitions_drop_expired(tables=…)`);
    the hourly purge leaves them alone. Partitions ahead are created for every registered table.
    """
    for table in tables:
        _TABLES[table.table] = table
        if shared_purge:
            _SHARED.add(table.table)
        else:
            _SHARED.discard(table.table)


def partitioned_tables() -> list[PartitionedTable]:
    return list(_TABLES.values())


def shared_partitioned_tables() -> list[str]:
    """The tables whose expired partitions the hourly `signalbox.maintenance.purge` drops."""
    return [name for name in _TABLES if name in _SHARED]


def months_ahead() -> int:
    return core_settings().partitions_ahead


def _lock_timeout_ms() -> int:
    return core_settings().partition_lock_timeout_ms


def is_partitioned(table: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return bool(row and row[0] == "p")


def partitions(table: str) -> list[Partition]:
    """The partitions of `table`, oldest first, DEFAULT last."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [table],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        found.append(Partition(name, uuid.UUID(match[1]), uuid.UUID(match[2])) if match else Partition(name))
    return sorted(found, key=lambda p: (p.is_default, p.lower or uuid.UUID(int=0)))


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month:%Y_%m}"


def default_partition_name(table: str) -> str:
    return f"{table}_default"


def _name_indexes(cursor: Any, table: str, partition: str) -> None:
    """Names a partition's indexes after the parent's (`notif_delivery_list_p2026_12`), so a plan
    says which index it reads, as it did before the table was partitioned."""
    suffix = partition.removeprefix(f"{table}_")
    cursor.execute(
        "SELECT c.relname, p.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE x.indrelid = to_regclass(%s)",
        [partition],
    )
    for own, parent in cursor.fetchall():
        wanted = f"{parent}_{suffix}"[:63]
        if own != wanted:
            cursor.execute(f"ALTER INDEX {own} RENAME TO {wanted}")


def _create_month(cursor: Any, spec_table: str, key: str, month: datetime) -> str:
    """Creates `month`'s partition beside the table, moves in the rows DEFAULT holds for it, attaches it.

    ATTACH takes SHARE UPDATE EXCLUSIVE on the parent (writers go on) and ACCESS EXCLUSIVE on the
    new table and on DEFAULT (checked empty of the month, which it now is), for milliseconds.
    """
    name = partition_name(spec_table, month)
    lower, upper = uuid7_floor(month), uuid7_floor(month_start(month, add=1))
    default = default_partition_name(spec_table)
    cursor.execute(f"CREATE TABLE {name} (LIKE {spec_table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {default} WHERE {key} >= %s AND {key} < %s RETURNING *) "  # noqa: S608
        f"INSERT INTO {name} SELECT * FROM moved",
        [lower, upper],
    )
    cursor.execute(f"ALTER TABLE {spec_table} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [lower, upper])
    _name_indexes(cursor, spec_table, name)
    return name


def partitions_ensure(*, now: datetime | None = None, ahead: int | None = None) -> list[str]:
    """Beat: every registered table has this month's partition and `ahead` more, and a DEFAULT one.

    Returns the partitions created. Harmless twice (a second run finds them); a table busy past the
    lock timeout is left for the next run, which still has months of margin.
    """
    now = now or timezone.now()
    ahead = months_ahead() if ahead is None else ahead
    created: list[str] = []
    for spec in partitioned_tables():
        if not is_partitioned(spec.table):
            continue
        existing = {p.name for p in partitions(spec.table)}
        for add in range(ahead + 1):
            month = month_start(now, add=add)
            if partition_name(spec.table, month) in existing:
                continue
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = {_lock_timeout_ms()}")
                    created.append(_create_month(cursor, spec.table, spec.key, month))
            except DatabaseError:
                log.warning("could not create a partition; next run retries", exc_info=True)
        if default_partition_name(spec.table) not in existing:
            with connection.cursor() as cursor:
                name = default_partition_name(spec.table)
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {spec.table} DEFAULT")
                _name_indexes(cursor, spec.table, name)
                created.append(name)
    return created


def longest_retention(spec: PartitionedTable, tenants: Iterable[Any]) -> timedelta:
    """The longest retention of any of the table's policies, for any tenant or the settings' default."""
    policies = [p for p in retention_policies() if p.name in spec.policies]
    owners = [None, *tenants]
    return timedelta(days=max((retention_days(t, p) for p in policies for t in owners), default=0))


@dataclass
class DropReport:
    dropped: dict[str, int]  # partition name: rows it held
    cascaded: dict[str, int]  # model label: rows deleted with them
    kept: list[str]  # past the horizon but still holding a row that must stay (or busy)

    def as_dict(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "cascaded": self.cascaded, "kept": self.kept}


def partition_matching(table: str, lower: uuid.UUID, upper: uuid.UUID) -> Partition | None:
    """`table`'s partition with exactly these bounds (the same month), if it has one."""
    return next((p for p in partitions(table) if p.lower == lower and p.upper == upper), None)


def _detach_and_drop(cursor: Any, table: str, partition: str) -> None:
    cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {partition}")
    cursor.execute(f"DROP TABLE {partition}")


def _rows(partition: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partition}")  # noqa: S608
        return int(cursor.fetchone()[0])


def _drop_lock_timeout_ms(cursor: Any) -> int:
    """The drop's lock wait: SIGNALBOX_PARTITION_LOCK_TIMEOUT_MS, but under half the server's
    `deadlock_timeout`, so that in a lock cycle with a writer (a transaction holding one table and
    wanting another this drop locked) the drop gives up first and the writer goes on."""
    cursor.execute("SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'")
    return max(1, min(_lock_timeout_ms(), int(cursor.fetchone()[0]) // 2))


def _drop(
    spec: PartitionedTable, partition: Partition, *, now: datetime, horizon: datetime
) -> tuple[int, dict[str, int]] | None:
    """Checks nothing in the partition must stay, then locks the table against writes, checks again
    what a write could have changed, detaches and drops it (and its companions' partitions).

    The full check (which may read the whole partition) and the row counts run first without a
    lock. Then, in one short transaction, the parent tables (this one and its companions) are
    locked against writes: SHARE ROW EXCLUSIVE on the parent alone, so reads go on and writers
    wait at the parent, holding nothing of the table. (Locking only the partition would let a
    writer that touches every partition — an update by id alone — take the parent, wait for the
    partition, and deadlock with the DETACH, which needs the parent.) Under the lock only
    `recheck`, from indexes, and `before_drop`, so writers wait milliseconds. Returns (rows it
    held, rows deleted with them by label), or None when it stays (in use, or too busy to lock).
    """
    lower, upper = partition.lower, partition.upper
    assert lower is not None and upper is not None
    if spec.in_use(lower, upper, now, horizon):
        return None
    companions = [_TABLES[name] for name in spec.companions if name in _TABLES and is_partitioned(name)]
    counted = {partition.name: _rows(partition.name)}
    for companion in companions:
        match = partition_matching(companion.table, lower, upper)
        if match is not None:
            counted[match.name] = _rows(match.name)
    order = list(_TABLES)  # one order for every drop: two drops never lock each other's tables crosswise
    parents = sorted([spec.table, *(c.table for c in companions)], key=order.index)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {_drop_lock_timeout_ms(cursor)}")
            cursor.execute(f"LOCK TABLE {', '.join(f'ONLY {p}' for p in parents)} IN SHARE ROW EXCLUSIVE MODE")
            if (spec.recheck or spec.in_use)(lower, upper, now, horizon):
                return None
            # A table with foreign-key checks still pending in this transaction cannot be dropped
            # (only a caller inside a transaction that wrote to it has any): run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cascaded = dict(spec.before_drop(partition)) if spec.before_drop else {}
            for companion in companions:
                match = partition_matching(companion.table, lower, upper)
                if match is not None:
                    _detach_and_drop(cursor, companion.table, match.name)
                    count = counted.get(match.name, 0)
                else:  # its rows of the range are in its DEFAULT partition
                    cursor.execute(
                        f"DELETE FROM {companion.table} WHERE {companion.key} >= %s AND {companion.key} < %s",  # noqa: S608
                        [lower, upper],
                    )
                    count = cursor.rowcount
                if count:  # under the model's label, as the batched DELETE reports cascaded rows
                    label = django_apps.get_model(companion.label)._meta.label
                    cascaded[label] = cascaded.get(label, 0) + count
            _detach_and_drop(cursor, spec.table, partition.name)
    except DatabaseError:
        log.warning("could not drop an expired partition; next run retries", exc_info=True)
        return None
    rows = counted[partition.name]
    for label, count in cascaded.items():
        announce_purged(label.lower(), count)
    announce_purged(spec.label, rows)
    return rows, cascaded


def _dry_run(
    spec: PartitionedTable, partition: Partition, *, now: datetime, horizon: datetime
) -> tuple[int, dict[str, int]] | None:
    assert partition.lower is not None and partition.upper is not None
    if spec.in_use(partition.lower, partition.upper, now, horizon):
        return None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partition.name}")  # noqa: S608
        return int(cursor.fetchone()[0]), {}


def partitions_drop_expired(
    *,
    now: datetime | None = None,
    tenants: Iterable[Any] | None = None,
    dry_run: bool = False,
    export: bool = False,
    tables: Collection[str] | None = None,
) -> DropReport:
    """Drops the partitions of `tables` (None: those of the hourly purge) whose rows are all past
    retention and not kept, in the order the tables were registered.

    A partition is a candidate when its upper bound (its key's time) is older than now minus the
    longest retention; its rows' own times are later than their key's (a delivery is created after
    its notification), so `in_use` checks them. Export, asked for by the call or by any tenant,
    drops nothing: the batched DELETE exports what it deletes.
    """
    now = now or timezone.now()
    owners = list(tenants) if tenants is not None else list(all_tenants())
    report = DropReport(dropped={}, cascaded={}, kept=[])
    if export or any((getattr(t, "settings", None) or {}).get("retention_export") for t in owners):
        return report
    chosen = set(shared_partitioned_tables() if tables is None else tables)
    for spec in partitioned_tables():
        if spec.table not in chosen or not is_partitioned(spec.table):
            continue
        horizon = now - longest_retention(spec, owners)
        for partition in partitions(spec.table):
            if partition.is_default or partition.upper is None or partition.upper > uuid7_floor(horizon):
                continue
            outcome = (
                _dry_run(spec, partition, now=now, horizon=horizon)
                if dry_run
                else _drop(spec, partition, now=now, horizon=horizon)
            )
            if outcome is None:
                report.kept.append(partition.name)
                continue
            report.dropped[partition.name] = outcome[0]
            for label, count in outcome[1].items():
                report.cascaded[label] = report.cascaded.get(label, 0) + count
    return report


# --- Migrations: a plain table rebuilt as a partitioned one, and back -------------------------


def _uuid7_time(value: uuid.UUID) -> datetime:
    return datetime.fromtimestamp((value.int >> 80) / 1000, tz=UTC)


def rebuild_table(cursor: Any, *, table: str, pk: str, key: str | None, now: datetime, months_back: int = 24) -> None:
    """Rebuilds `table` (PostgreSQL) partitioned by month of `key`, or as a plain table when `key` is None.

    Create new / copy / swap in the migration's transaction: the table is renamed aside, an empty
    one with its columns, defaults and checks takes its name, the rows are copied in, the old one
    is dropped, then its primary key (plus `key`: PostgreSQL requires the partition key in every
    unique constraint), unique and foreign-key constraints, indexes, identity column and owned
    sequences are recreated under the same names. A unique constraint without `key` refuses the
    rebuild: it would no longer hold across partitions. Partitions: one per month from the oldest
    row's (at most `months_back` back) to `SIGNALBOX_PARTITIONS_AHEAD` ahead, and DEFAULT.
    """
    cursor.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        [table, table],
    )
    indexes = [row[0].replace(" ON ONLY ", " ON ", 1) for row in cursor.fetchall()]
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype DESC, conname",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attidentity <> '' AND attnum > 0",
        [table],
    )
    identity = [row[0] for row in cursor.fetchall()]
    last_ids = {}
    for column in identity:
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [table, column])
        cursor.execute(f"SELECT last_value FROM {cursor.fetchone()[0]}")  # noqa: S608
        last_ids[column] = int(cursor.fetchone()[0])
    cursor.execute(
        "SELECT s.relname, a.attname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.refobjid = %s::regclass AND d.deptype = 'a'",
        [table],
    )
    owned = cursor.fetchall()
    for sequence, _column in owned:
        cursor.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")

    old = f"{table}_rebuilt_from"
    cursor.execute(f"ALTER TABLE {table} RENAME TO {old}")
    partition_by = f" PARTITION BY RANGE ({key})" if key else ""
    cursor.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS){partition_by}")
    if key:
        # Only UUIDv7 keys say when their row was made (a UUIDv4 of a table that took v7 ids late
        # falls anywhere, mostly in DEFAULT, and must not decide how many months are created).
        cursor.execute(
            f"SELECT {key} FROM {old} WHERE substr({key}::text, 15, 1) = '7' ORDER BY {key} LIMIT 1"  # noqa: S608
        )
        oldest = (cursor.fetchone() or [None])[0]
        first = month_start(now)
        if oldest is not None:  # older rows than `months_back` go to DEFAULT (the batched DELETE's)
            first = max(month_start(now, add=-months_back), min(month_start(_uuid7_time(oldest)), first))
        month = first
        while month <= month_start(now, add=months_ahead()):
            cursor.execute(
                f"CREATE TABLE {partition_name(table, month)} PARTITION OF {table} FOR VALUES FROM (%s) TO (%s)",
                [uuid7_floor(month), uuid7_floor(month_start(month, add=1))],
            )
            month = month_start(month, add=1)
        cursor.execute(f"CREATE TABLE {default_partition_name(table)} PARTITION OF {table} DEFAULT")
    cursor.execute(f"INSERT INTO {table} SELECT * FROM {old}")  # noqa: S608
    cursor.execute(f"DROP TABLE {old}")

    for name, kind, definition in constraints:
        if kind == "p":
            columns = [pk, key] if key and key != pk else [pk]
            definition = f"PRIMARY KEY ({', '.join(columns)})"
        elif kind == "u" and key and key not in definition:
            raise RuntimeError(f"{table}: unique constraint {name} lacks the partition key {key}")
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    for definition in indexes:
        cursor.execute(definition)
    for part in partitions(table) if key else []:
        _name_indexes(cursor, table, part.name)
    for column in identity:
        cursor.execute(
            f"ALTER TABLE {table} ALTER COLUMN {column} ADD GENERATED BY DEFAULT AS IDENTITY "
            f"(SEQUENCE NAME {table}_{column}_seq)"
        )
        cursor.execute(
            f"SELECT setval('{table}_{column}_seq', GREATEST(%s, (SELECT COALESCE(max({column}), 1) FROM {table})))",  # noqa: S608
            [last_ids[column]],
        )
    for sequence, column in owned:
        cursor.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.{column}")
    cursor.execute(f"ANALYZE {table}")
