import uuid

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models

from agentidp.rls import tenant_isolation


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0004_partner_allow_delegation"),
        ("oidc", "0018_resource_metadata_hosted"),
        ("organizations", "0008_assertion_audience"),
    ]

    operations = [
        migrations.CreateModel(
            name="PartnerResource",
            fields=[
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "scopes",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(max_length=100), default=list, size=None
                    ),
                ),
                ("created_by", models.CharField(editable=False, max_length=200)),
                (
                    "organization",
                    models.ForeignKey(
                        editable=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="organizations.organization",
                    ),
                ),
                (
                    "partner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="shared_resources",
                        to="federation.federationpartner",
                    ),
                ),
                (
                    "resource",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="partner_shares",
                        to="oidc.resource",
                    ),
                ),
            ],
            options={
                "db_table": "federation_partner_resource",
                "ordering": ["created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("partner", "resource"), name="federation_partner_resource_once"
                    )
                ],
            },
        ),
        tenant_isolation("federation_partner_resource"),
    ]
