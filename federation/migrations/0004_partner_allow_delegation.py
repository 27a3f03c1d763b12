from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0003_assertions_deployment_wide"),
    ]

    operations = [
        migrations.AddField(
            model_name="federationpartner",
            name="allow_delegation",
            field=models.BooleanField(
                default=False,
                help_text="Only for this deployment's own issuer (its other organizations): their agents may act for this organization's agents through token exchange, where an agent's delegation policy names them.",
            ),
        ),
    ]
