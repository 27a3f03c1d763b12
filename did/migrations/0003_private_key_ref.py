"""Custodial DID keys record where their private part is, encrypted at rest."""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

from compliance.encryption import encrypt
from did.services import PRIVATE_KEY_COLUMN, did_key_path


def seal_references(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Every custodial key gets its (encrypted) reference (as the owner role, across tenants)."""
    alias = schema_editor.connection.alias
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, organization_id, kid FROM agent_did_keys"
            " WHERE custodial AND private_key_ref = ''"
        )
        for key_id, organization_id, kid in cursor.fetchall():
            sealed = encrypt(
                did_key_path(organization_id, kid),
                organization_id=organization_id,
                column=PRIVATE_KEY_COLUMN,
                row_id=key_id,
                using=alias,
            )
            cursor.execute(
                "UPDATE agent_did_keys SET private_key_ref = %s WHERE id = %s", [sealed, key_id]
            )


class Migration(migrations.Migration):
    dependencies = [
        ("did", "0002_backfill_agent_dids"),
        ("compliance", "0006_data_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="agentdidkey",
            name="private_key_ref",
            field=models.TextField(
                blank=True,
                default="",
                db_default="",
                editable=False,
                help_text="Custodial keys: where the private part is in the secret store (encrypted).",
            ),
        ),
        migrations.RunPython(seal_references, migrations.RunPython.noop),
    ]
