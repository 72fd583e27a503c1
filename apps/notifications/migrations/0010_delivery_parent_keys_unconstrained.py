# Deliveries keep Django's relations to their tenant, notification and template version but lose
# the database constraints on those three columns (the recipient keeps its own). Every row a
# fan-out chunk writes has the same three, read in that chunk's transaction; PostgreSQL checked
# each of them again for every row at commit (a deferred trigger each), which measured a third of
# the cost of inserting an in-app delivery (docs/benchmarks.md, "Fan-out"). Deletion still goes
# through Django's cascade (on_delete) or the retention purge, children first. On SQLite (`make
# run`) the constraints stay: dropping one there rebuilds the table, and nothing is gained.

import django.db.models.deletion
from django.db import migrations, models

TABLE = "notifications_delivery"
# column -> (referenced table, name of the constraint to recreate on the way back)
KEYS = {
    "tenant_id": ("tenancy_tenant", "notifications_delivery_tenant_id_f32037c6_fk_tenancy_tenant_id"),
    "notification_id": ("notifications_notification", "notifications_delive_notification_id_ea8dc048_fk_notificat"),
    "template_version_id": (
        "notifications_templateversion",
        "notifications_delive_template_version_id_e63a0331_fk_notificat",
    ),
}


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.conname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
            "AND a.attnum = c.conkey[1] WHERE c.conrelid = %s::regclass AND c.contype = 'f' "
            "AND array_length(c.conkey, 1) = 1 AND a.attname = ANY(%s)",
            [TABLE, list(KEYS)],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')


def restore(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for column, (target, name) in KEYS.items():
            cursor.execute(
                f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" FOREIGN KEY ({column}) REFERENCES {target} (id) '
                "DEFERRABLE INITIALLY DEFERRED"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0009_engagement_suppression"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="tenant",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenancy.tenant",
                    ),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="notification",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="notifications.notification",
                    ),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="template_version",
                    field=models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.RESTRICT,
                        related_name="+",
                        to="notifications.templateversion",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop, restore)],
        ),
    ]
