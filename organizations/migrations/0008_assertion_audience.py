from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("organizations", "0007_attestation_period"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="assertion_audience_token_endpoint",
            field=models.BooleanField(
                default=False,
                help_text="Accept private_key_jwt assertions whose aud is the token endpoint's URL, not only the issuer identifier (RFC 7523 as older clients send it).",
            ),
        ),
    ]
