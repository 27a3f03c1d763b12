import uuid

import django.db.models.deletion
from django.db import migrations, models

from agentidp.rls import tenant_isolation


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_attestation_schedule"),
        ("credentials", "0008_client_load_delegation"),
        ("organizations", "0007_attestation_period"),
    ]

    operations = [
        migrations.CreateModel(
            name="AgentKey",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "kid",
                    models.CharField(
                        help_text="The key id assertions name in their header.", max_length=200
                    ),
                ),
                (
                    "algorithm",
                    models.CharField(
                        blank=True, help_text="The JWK's alg, if it set one.", max_length=10
                    ),
                ),
                ("public_jwk", models.JSONField(blank=True, null=True)),
                ("jwks_uri", models.CharField(blank=True, max_length=2048)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("created_by", models.CharField(blank=True, editable=False, max_length=200)),
                ("last_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "agent",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="keys",
                        to="agents.agent",
                    ),
                ),
                (
                    "organization",
                    models.ForeignKey(
                        editable=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="organizations.organization",
                    ),
                ),
            ],
            options={
                "ordering": ["created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("agent", "kid"), name="credentials_agentkey_kid_once"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("public_jwk__isnull", False), ("jwks_uri", "")),
                            models.Q(
                                ("public_jwk__isnull", True),
                                models.Q(("jwks_uri", ""), _negated=True),
                            ),
                            _connector="OR",
                        ),
                        name="credentials_agentkey_jwk_or_uri",
                    ),
                ],
            },
        ),
        tenant_isolation("credentials_agentkey"),
    ]
