import uuid

import django.db.models.deletion
from django.db import migrations, models

from agentidp.rls import tenant_isolation


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_attestation_schedule"),
        ("oidc", "0016_lineage_across_organizations"),
        ("organizations", "0007_attestation_period"),
    ]

    operations = [
        migrations.CreateModel(
            name="Resource",
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
                    "identifier",
                    models.CharField(
                        help_text="The resource indicator (RFC 8707) agents ask for and tokens name as aud: an absolute https URI without a fragment (http only on loopback, in development).",
                        max_length=2048,
                        unique=True,
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("scopes", models.JSONField(blank=True, default=list)),
                (
                    "access_token_lifetime",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="Seconds its tokens live (empty: the organization's lifetime); never longer than the organization's lifetime.",
                        null=True,
                    ),
                ),
                (
                    "signing_algorithm",
                    models.CharField(
                        choices=[
                            ("ES256", "ES256 (ECDSA P-256)"),
                            ("RS256", "RS256 (RSA 2048)"),
                            ("EdDSA", "EdDSA (Ed25519)"),
                        ],
                        default="ES256",
                        max_length=10,
                    ),
                ),
                (
                    "dpop_required",
                    models.BooleanField(
                        default=False,
                        help_text="Only sender-constrained (DPoP, RFC 9449) tokens are issued.",
                    ),
                ),
                ("created_by", models.CharField(blank=True, editable=False, max_length=200)),
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
                "ordering": ["identifier"],
            },
        ),
        migrations.CreateModel(
            name="ResourceGrant",
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
                    "role",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("owner", "Owner"),
                            ("admin", "Admin"),
                            ("member", "Member"),
                            ("auditor", "Auditor"),
                        ],
                        help_text="Every agent holding this role in the organization (instead of one agent).",
                        max_length=20,
                    ),
                ),
                ("scopes", models.JSONField(blank=True, default=list)),
                (
                    "agent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
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
                (
                    "resource",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="grants",
                        to="oidc.resource",
                    ),
                ),
            ],
            options={
                "ordering": ["resource", "role"],
            },
        ),
        migrations.AddIndex(
            model_name="resource",
            index=models.Index(fields=["organization", "identifier"], name="oidc_resource_org"),
        ),
        migrations.AddConstraint(
            model_name="resourcegrant",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("agent__isnull", False), ("role", "")),
                    models.Q(("agent__isnull", True), models.Q(("role", ""), _negated=True)),
                    _connector="OR",
                ),
                name="oidc_resourcegrant_agent_or_role",
            ),
        ),
        migrations.AddConstraint(
            model_name="resourcegrant",
            constraint=models.UniqueConstraint(
                condition=models.Q(("agent__isnull", False)),
                fields=("resource", "agent"),
                name="oidc_resourcegrant_agent_once",
            ),
        ),
        migrations.AddConstraint(
            model_name="resourcegrant",
            constraint=models.UniqueConstraint(
                condition=models.Q(("role", ""), _negated=True),
                fields=("resource", "role"),
                name="oidc_resourcegrant_role_once",
            ),
        ),
        tenant_isolation("oidc_resource"),
        tenant_isolation("oidc_resourcegrant"),
    ]
