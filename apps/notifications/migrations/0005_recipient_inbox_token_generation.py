# Inbox tokens become revocable per recipient: a token carries the generation it was minted in.
# db_default: COPY and raw inserts that name no such column stay valid.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0004_delivery_unknown_claim_token_in_flight"),
    ]

    operations = [
        migrations.AddField(
            model_name="recipient",
            name="inbox_token_generation",
            field=models.PositiveIntegerField(
                db_default=0,
                default=0,
                editable=False,
                help_text="Inbox tokens minted before the last revocation (a lower generation) are refused.",
            ),
        ),
    ]
