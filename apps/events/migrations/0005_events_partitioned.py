# Events, their rule executions, webhook messages and attempts become partitioned by month on
# PostgreSQL (docs/partitions.md), as deliveries did in notifications 0008: events by their own id,
# rule executions and webhook messages by their event's id (so the unique (rule, event) and
# (endpoint, event) keep their meaning), attempts by their message's id (unique (message, number)).
# New events and messages take UUIDv7 ids (their creation time: the partition key); existing ones
# keep their UUIDv4, land in DEFAULT and are purged by the batched DELETE as they expire. The
# references into partitioned tables lose their database constraint first (a partitioned table can
# only be referenced through its whole primary key); the events app keeps them. Each table is
# rebuilt in this migration's transaction (create new / copy / swap): run it in a maintenance
# window on a large installation. SQLite (`make run`) keeps plain tables.

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

import apps.notifications.models
from apps.core.partitions import rebuild_table

TABLES = (
    ("events_event", "id", "id"),
    ("events_ruleexecution", "id", "event_id"),
    ("events_webhookmessage", "id", "event_id"),
    ("events_webhookattempt", "id", "message_id"),
)


def partition(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table, pk, key in TABLES:
            rebuild_table(cursor, table=table, pk=pk, key=key, now=timezone.now())


def unpartition(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table, pk, _key in reversed(TABLES):
            rebuild_table(cursor, table=table, pk=pk, key=None, now=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0004_event_attempts"),
    ]

    operations = [
        migrations.AlterField(
            model_name="event",
            name="id",
            field=models.UUIDField(
                default=apps.notifications.models.uuid7, editable=False, primary_key=True, serialize=False
            ),
        ),
        migrations.AlterField(
            model_name="webhookmessage",
            name="id",
            field=models.UUIDField(
                default=apps.notifications.models.uuid7, editable=False, primary_key=True, serialize=False
            ),
        ),
        migrations.AlterField(
            model_name="ruleexecution",
            name="event",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="rule_executions",
                to="events.event",
            ),
        ),
        migrations.AlterField(
            model_name="webhookmessage",
            name="event",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="webhook_messages",
                to="events.event",
            ),
        ),
        migrations.AlterField(
            model_name="webhookattempt",
            name="message",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="attempts",
                to="events.webhookmessage",
            ),
        ),
        migrations.RunPython(partition, unpartition),
    ]
