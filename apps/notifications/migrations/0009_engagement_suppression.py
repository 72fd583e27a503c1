"""Engagement and Suppression move here from the providers app: their tables stay as they are
(`providers_engagement`, `providers_suppression`), only Django's state and the content types
(admin permissions and log entries) move."""

import django.db.models.deletion
from django.db import migrations, models

MOVED = ("engagement", "suppression")


def _relabel(apps, source: str, target: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label=source, model__in=MOVED).update(app_label=target)


def move_content_types(apps, schema_editor) -> None:
    _relabel(apps, "providers", "notifications")


def move_content_types_back(apps, schema_editor) -> None:
    _relabel(apps, "notifications", "providers")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("notifications", "0008_delivery_partitioned"),
        ("tenancy", "0001_initial"),
        ("providers", "0003_engagement_suppression_moved"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Engagement",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("delivery_id", models.UUIDField()),
                        ("kind", models.CharField(choices=[("open", "Open"), ("click", "Click")], max_length=8)),
                        ("url", models.URLField(blank=True, max_length=2000)),
                        ("count", models.PositiveIntegerField(default=1)),
                        ("first_at", models.DateTimeField()),
                        ("last_at", models.DateTimeField()),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tenancy.tenant"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "providers_engagement",
                        "indexes": [models.Index(fields=["tenant", "-first_at"], name="provider_engagement_recent")],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("delivery_id", "kind", "url"), name="provider_engagement_unique"
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="Suppression",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "channel",
                            models.CharField(
                                choices=[
                                    ("email", "email"),
                                    ("sms", "sms"),
                                    ("in_app", "in_app"),
                                    ("chat", "chat"),
                                    ("webhook", "webhook"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("address", models.CharField(max_length=1000)),
                        (
                            "reason",
                            models.CharField(
                                choices=[
                                    ("hard_bounce", "Hard Bounce"),
                                    ("spam_report", "Spam Report"),
                                    ("unsubscribed", "Unsubscribed"),
                                    ("invalid_address", "Invalid Address"),
                                    ("not_mobile", "Not Mobile"),
                                    ("blocked", "Blocked"),
                                    ("gone", "Gone"),
                                    ("manual", "Manual"),
                                ],
                                max_length=32,
                            ),
                        ),
                        (
                            "source",
                            models.CharField(
                                blank=True, help_text="What reported it, e.g. `sendgrid:bounce`.", max_length=64
                            ),
                        ),
                        ("detail", models.TextField(blank=True)),
                        (
                            "delivery_id",
                            models.UUIDField(blank=True, help_text="The delivery that revealed it.", null=True),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tenancy.tenant"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "providers_suppression",
                        "ordering": ("-created_at",),
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("tenant", "channel", "address"), name="provider_suppression_unique"
                            )
                        ],
                    },
                ),
            ]
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
