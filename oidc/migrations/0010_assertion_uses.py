"""Spent assertions, deployment-wide: one use per issuer and jti whatever organization an
assertion is presented to (before, each organization kept its own list, so an assertion spent
in one could be spent once more in another that trusts the same issuer). The application role
reaches the table only through two SECURITY DEFINER functions (search_path pinned)."""

from django.db import migrations, models

SPEND = """
CREATE FUNCTION oidc_assertion_spend(p_issuer_sha256 text, p_jti_sha256 text,
                                     p_expires_at timestamptz)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    spent integer;
BEGIN
    -- a row whose assertion has expired may be taken again (its jti could not be replayed
    -- anyway: the assertion would be refused as expired)
    INSERT INTO public.oidc_assertionuse (issuer_sha256, jti_sha256, expires_at, spent_at)
    VALUES (p_issuer_sha256, p_jti_sha256, p_expires_at, now())
    ON CONFLICT (issuer_sha256, jti_sha256) DO UPDATE
       SET expires_at = EXCLUDED.expires_at, spent_at = EXCLUDED.spent_at
     WHERE public.oidc_assertionuse.expires_at < now();
    GET DIAGNOSTICS spent = ROW_COUNT;
    RETURN spent = 1;
END
$$
"""
PURGE = """
CREATE FUNCTION oidc_assertion_uses_purge() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (DELETE FROM public.oidc_assertionuse WHERE expires_at < now() RETURNING 1)
    SELECT count(*)::integer FROM gone
$$
"""


class Migration(migrations.Migration):
    dependencies = [("oidc", "0009_token_issue_digest_index")]

    operations = [
        migrations.CreateModel(
            name="AssertionUse",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("issuer_sha256", models.CharField(editable=False, max_length=64)),
                ("jti_sha256", models.CharField(editable=False, max_length=64)),
                ("expires_at", models.DateTimeField(editable=False)),
                ("spent_at", models.DateTimeField(editable=False)),
            ],
            options={
                "indexes": [models.Index(fields=["expires_at"], name="oidc_assertionuse_expires")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("issuer_sha256", "jti_sha256"), name="oidc_assertionuse_once"
                    )
                ],
            },
        ),
        migrations.RunSQL(
            SPEND,
            reverse_sql="DROP FUNCTION oidc_assertion_spend(text, text, timestamptz)",
        ),
        migrations.RunSQL(PURGE, reverse_sql="DROP FUNCTION oidc_assertion_uses_purge()"),
    ]
