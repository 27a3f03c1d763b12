"""``oidc_token_issue`` re-checks the secret by its blind index (the digest is encrypted)."""

from importlib import import_module

from django.db import migrations

BEFORE = import_module("oidc.migrations.0006_token_issue_function").FUNCTION.replace(
    "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"
)
FUNCTION = BEFORE.replace("s.digest = p_digest", "s.digest_index = p_digest")


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0008_signing_key_schedules"),
        ("credentials", "0007_encrypted_at_rest"),
    ]

    operations = [migrations.RunSQL(FUNCTION, reverse_sql=BEFORE)]
