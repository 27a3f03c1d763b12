"""Webhook secret references are encrypted at rest (``compliance.encryption``)."""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

from compliance.encryption import PREFIX, encrypt
from webhooks.services import PREVIOUS_SECRET_COLUMN, SECRET_COLUMN


def seal_references(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Encrypt every plain reference (runs as the owner role, across tenants)."""
    alias = schema_editor.connection.alias
    with schema_editor.connection.cursor() as cursor:
        for column in (SECRET_COLUMN, PREVIOUS_SECRET_COLUMN):
            cursor.execute(
                f"SELECT id, organization_id, {column.field} FROM webhooks_webhooksubscription"  # noqa: S608
                f" WHERE {column.field} <> '' AND {column.field} NOT LIKE %s",
                [f"{PREFIX}%"],
            )
            for subscription_id, organization_id, path in cursor.fetchall():
                sealed = encrypt(
                    path,
                    organization_id=organization_id,
                    column=column,
                    row_id=subscription_id,
                    using=alias,
                )
                cursor.execute(
                    f"UPDATE webhooks_webhooksubscription SET {column.field} = %s WHERE id = %s",  # noqa: S608
                    [sealed, subscription_id],
                )


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0002_pump_schedule"),
        ("compliance", "0006_data_keys"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhooksubscription",
            name="secret_ref",
            field=models.TextField(editable=False),
        ),
        migrations.AlterField(
            model_name="webhooksubscription",
            name="previous_secret_ref",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.RunPython(seal_references, migrations.RunPython.noop),
    ]
