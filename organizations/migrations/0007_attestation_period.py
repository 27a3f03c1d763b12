from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("organizations", "0006_delegation"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="attestation_period_days",
            field=models.PositiveSmallIntegerField(
                db_default=90,
                default=90,
                help_text="How often each agent's sponsor must attest that it is still needed; an agent whose attestation lapses is suspended.",
            ),
        ),
    ]
