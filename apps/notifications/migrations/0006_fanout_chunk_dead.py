# A fan-out chunk counts its runs and ends `dead` with its last error after
# FANOUT_CHUNK_MAX_ATTEMPTS, instead of being retried forever. db_default: existing rows and raw
# inserts that name no such column stay valid.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0005_recipient_inbox_token_generation"),
    ]

    operations = [
        migrations.AddField(
            model_name="fanoutchunk",
            name="attempts",
            field=models.PositiveSmallIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="fanoutchunk",
            name="last_error",
            field=models.TextField(blank=True, db_default="", default=""),
        ),
        migrations.AddField(
            model_name="fanoutchunk",
            name="dead_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
