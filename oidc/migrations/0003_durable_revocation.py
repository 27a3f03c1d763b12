"""Durable revocation: every revoked token is recorded in the database until it would have
expired (Redis only caches the list), tokens remember the secret they were issued with, and
one SECURITY DEFINER function lets the cache be rebuilt before any organization is known."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0002_forget_stored_tokens"),
        ("organizations", "0003_token_usage"),
    ]

    operations = [
        migrations.AddField(
            model_name="accesstoken",
            name="credential_id",
            field=models.UUIDField(
                blank=True,
                editable=False,
                help_text="The client secret it was issued with.",
                null=True,
            ),
        ),
        migrations.CreateModel(
            name="RevokedToken",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("jti", models.UUIDField(editable=False, unique=True)),
                ("expires_at", models.DateTimeField(editable=False)),
                ("revoked_at", models.DateTimeField(editable=False)),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("client_request", "Revoked by its client (RFC 7009)"),
                            ("credential_revoked", "The secret it was issued with was revoked"),
                            ("agent_suspended", "Its agent was suspended"),
                            ("agent_decommissioned", "Its agent was decommissioned"),
                        ],
                        editable=False,
                        max_length=30,
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
                "indexes": [models.Index(fields=["expires_at"], name="oidc_revoked_expires")],
            },
        ),
        migrations.RunSQL(
            sql=[
                'ALTER TABLE "oidc_revokedtoken" ENABLE ROW LEVEL SECURITY',
                'ALTER TABLE "oidc_revokedtoken" FORCE ROW LEVEL SECURITY',
                """CREATE POLICY oidc_revokedtoken_tenant_isolation ON "oidc_revokedtoken"
                   USING (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid)
                   WITH CHECK (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid)""",
            ],
            reverse_sql=[
                'DROP POLICY oidc_revokedtoken_tenant_isolation ON "oidc_revokedtoken"',
                'ALTER TABLE "oidc_revokedtoken" NO FORCE ROW LEVEL SECURITY',
                'ALTER TABLE "oidc_revokedtoken" DISABLE ROW LEVEL SECURITY',
            ],
        ),
        migrations.RunSQL(
            # Rebuilding the revocation cache reads every organization's live revocations,
            # and reveals nothing but random token ids and their expiry. SECURITY DEFINER runs
            # it as the owner (BYPASSRLS); search_path is pinned.
            sql="""CREATE FUNCTION oidc_revocations_live()
                   RETURNS TABLE (jti uuid, expires_at timestamptz)
                   LANGUAGE sql STABLE SECURITY DEFINER
                   SET search_path = pg_catalog, public AS $$
                       SELECT r.jti, r.expires_at FROM public.oidc_revokedtoken r
                       WHERE r.expires_at > now()
                   $$""",
            reverse_sql="DROP FUNCTION oidc_revocations_live()",
        ),
    ]
