# Deliveries and their attempts become partitioned by month on PostgreSQL (docs/partitions.md):
# deliveries by their notification's id (a UUIDv7: its creation time), so the no-double-send guard
# (notification, recipient, channel) keeps its meaning, and attempts by their delivery's id. The
# foreign keys into deliveries lose their database constraint first (a partitioned table can only
# be referenced through its whole primary key). Each table is rebuilt in this migration's
# transaction (create new / copy / swap): it is locked while its rows are copied, so on a large
# installation run it in a maintenance window. SQLite (`make run`) keeps plain tables.

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

from apps.core.partitions import rebuild_table

TABLES = (
    ("notifications_delivery", "id", "notification_id"),
    ("notifications_deliveryattempt", "id", "delivery_id"),
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
        ("notifications", "0007_delivery_change_seq"),
    ]

    operations = [
        migrations.AlterField(
            model_name="deliveryattempt",
            name="delivery",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="attempts_log",
                to="notifications.delivery",
            ),
        ),
        migrations.AlterField(
            model_name="digestitem",
            name="delivery",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="digest_item",
                to="notifications.delivery",
            ),
        ),
        migrations.RunPython(partition, unpartition),
    ]
