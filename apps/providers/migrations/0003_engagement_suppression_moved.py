"""Engagement and Suppression leave for the notifications app (its 0009 takes them over): state
only, the tables stay."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("providers", "0002_suppression_providerevent"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="suppression",
                    name="tenant",
                ),
                migrations.DeleteModel(
                    name="Engagement",
                ),
                migrations.DeleteModel(
                    name="Suppression",
                ),
            ]
        ),
    ]
