"""Data keys for encryption at rest (``compliance.encryption``), under RLS, and the daily rewrap."""

import django.db.models.deletion
from django.db import migrations, models

from agentidp.rls import tenant_isolation
from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0005_audit_merkle_tree"),
        ("organizations", "0004_organization_did_key_algorithm"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name="DataKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("version", models.PositiveIntegerField()),
                (
                    "wrapped",
                    models.TextField(help_text="The key wrapped by the KEK; its version leads it."),
                ),
                ("created_at", models.DateTimeField()),
                ("rewrapped_at", models.DateTimeField(blank=True, null=True)),
                (
                    "organization",
                    models.ForeignKey(
                        db_index=False,
                        editable=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="organizations.organization",
                    ),
                ),
            ],
            options={
                "ordering": ["organization", "version"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("organization", "version"), name="compliance_datakey_unique_version"
                    )
                ],
            },
        ),
        tenant_isolation("compliance_datakey"),
        interval_task(
            name="Rewrap data at rest (all organizations)",
            task="compliance.tasks.data_rewrap_all_task",
            every=1,
            period="days",
        ),
    ]
