# The live streams' cursor (docs/realtime.md). The column is added without a default (instant,
# no table rewrite), then given `nextval(...)` as its default, which applies to new rows only;
# rows from before have no cursor and are never replayed. On SQLite (`make run`) a trigger
# numbers inserted rows. The index is built CONCURRENTLY on PostgreSQL, so the table keeps
# taking writes.

from django.db import migrations, models

import apps.notifications.models
from apps.core.migration_operations import AddIndexConcurrentlyWhereSupported

SEQUENCE = "notif_delivery_change_seq"


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} OWNED BY notifications_delivery.change_seq")
            cursor.execute(
                f"ALTER TABLE notifications_delivery ALTER COLUMN change_seq SET DEFAULT nextval('{SEQUENCE}')"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER IF NOT EXISTS notif_delivery_change_seq AFTER INSERT ON notifications_delivery "
                "WHEN NEW.change_seq IS NULL BEGIN UPDATE notifications_delivery SET change_seq = "
                "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM notifications_delivery) WHERE id = NEW.id; END"
            )


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE notifications_delivery ALTER COLUMN change_seq DROP DEFAULT")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS notif_delivery_change_seq")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY

    dependencies = [
        ("notifications", "0006_fanout_chunk_dead"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="delivery",
                    name="change_seq",
                    field=models.BigIntegerField(
                        blank=True,
                        db_default=apps.notifications.models.NextChangeSeq(),
                        editable=False,
                        null=True,
                    ),
                ),
            ],
            database_operations=[
                migrations.AddField(
                    model_name="delivery",
                    name="change_seq",
                    field=models.BigIntegerField(blank=True, editable=False, null=True),
                ),
                migrations.RunPython(forwards, backwards, elidable=False),
            ],
        ),
        AddIndexConcurrentlyWhereSupported(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("channel", "in_app")),
                fields=["recipient", "change_seq"],
                name="notif_delivery_inbox_seq",
            ),
        ),
    ]
