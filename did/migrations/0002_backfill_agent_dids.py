"""Agents registered before DIDs existed get theirs (did.backfill; safe to re-run)."""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

from did.backfill import dids_backfill


def backfill(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    dids_backfill(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("did", "0001_initial"), ("compliance", "0004_audit_organization_index")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
