from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="response_sealed",
            field=models.BooleanField(
                default=False, help_text="The body holds a secret shown once, so it is stored encrypted (a string)."
            ),
        ),
    ]
