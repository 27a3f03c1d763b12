from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0003_encrypted_at_rest"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhooksubscription",
            name="format",
            field=models.CharField(
                choices=[
                    ("standard", "Standard Webhooks JSON envelope"),
                    (
                        "set",
                        "Security Event Tokens (RFC 8417, CAEP session-revoked) for revocations",
                    ),
                ],
                db_default="standard",
                default="standard",
                help_text="standard: the JSON envelope of every subscribed event; set: a signed Security Event Token (RFC 8417, CAEP) for each revocation among them.",
                max_length=10,
            ),
        ),
    ]
