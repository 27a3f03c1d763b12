"""The stored credential digest is encrypted at rest; lookups compare a keyed blind index.

``digest`` becomes ``digest_index`` (HMAC-SHA256 of the digest under a second server key) and
``digest_ciphertext`` holds the digest sealed by ``compliance.encryption``. Existing rows are
converted here; ``credentials_client_load`` returns the index.
"""

from importlib import import_module

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

from compliance.encryption import encrypt
from credentials.services import DIGEST_COLUMN, digest_index

BEFORE = import_module("credentials.migrations.0006_client_load_did").FUNCTION
PREVIOUS = "DROP FUNCTION credentials_client_load(text)"
FUNCTION = BEFORE.replace("s.digest,", "s.digest_index,")


def seal_digests(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Encrypt every stored digest and index it (runs as the owner role, across tenants)."""
    alias = schema_editor.connection.alias
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, organization_id, digest_index FROM credentials_clientsecret"
            " WHERE digest_ciphertext = ''"
        )
        rows = cursor.fetchall()
        for secret_id, organization_id, digest in rows:
            sealed = encrypt(
                digest,
                organization_id=organization_id,
                column=DIGEST_COLUMN,
                row_id=secret_id,
                using=alias,
            )
            cursor.execute(
                "UPDATE credentials_clientsecret SET digest_ciphertext = %s, digest_index = %s"
                " WHERE id = %s",
                [sealed, digest_index(digest), secret_id],
            )


class Migration(migrations.Migration):
    dependencies = [
        ("credentials", "0006_client_load_did"),
        ("compliance", "0006_data_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="clientsecret",
            name="digest_ciphertext",
            field=models.TextField(default="", editable=False),
            preserve_default=False,
        ),
        migrations.RenameField(
            model_name="clientsecret", old_name="digest", new_name="digest_index"
        ),
        migrations.AlterField(
            model_name="clientsecret",
            name="digest_index",
            field=models.CharField(editable=False, max_length=64),
        ),
        migrations.RunPython(seal_digests, migrations.RunPython.noop),
        migrations.RunSQL([PREVIOUS, FUNCTION], reverse_sql=[PREVIOUS, BEFORE]),
    ]
