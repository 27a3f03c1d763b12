"""Token status lists (draft-ietf-oauth-status-list): every token gets an index, allocated in
blocks from ``oidc_status_block``; a revoked token's row keeps that index, and the status list
reads the indexes of one list's revoked tokens, across organizations, through
``oidc_status_revoked`` (SECURITY DEFINER: the list is deployment-wide and public, and reveals
nothing but which indexes are revoked). ``oidc_token_issue`` records the index."""

from importlib import import_module

from django.db import migrations, models

_PREVIOUS = import_module("oidc.migrations.0006_token_issue_function")
OLD_FUNCTION = import_module("oidc.migrations.0009_token_issue_digest_index").FUNCTION.replace(
    "CREATE OR REPLACE FUNCTION", "CREATE FUNCTION"
)
FUNCTION = (
    OLD_FUNCTION.replace(
        "p_middle text, p_suffix text)", "p_middle text, p_suffix text, p_status_idx bigint)"
    )
    .replace("scope, expires, resource, created, updated, credential_id)",
             "scope, expires, resource, created, updated, credential_id,\n"
             "                                  status_idx)")
    .replace("p_resource, p_occurred_at, p_occurred_at, p_credential_id);",
             "p_resource, p_occurred_at, p_occurred_at, p_credential_id, p_status_idx);")
)  # fmt: skip
assert FUNCTION.count("p_status_idx") == 2  # noqa: S101 - the replacements all applied
SIGNATURE = _PREVIOUS.SIGNATURE.replace("text, text, text)", "text, text, text, bigint)")

REVOKED = """
CREATE FUNCTION oidc_status_revoked(p_first bigint, p_last bigint) RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT status_idx FROM public.oidc_revokedtoken
     WHERE status_idx >= p_first AND status_idx < p_last AND expires_at > now()
$$
"""


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0013_revocation_reason_lineage"),
        ("organizations", "0006_delegation"),
    ]

    operations = [
        migrations.AddField(
            model_name="accesstoken",
            name="status_idx",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="revokedtoken",
            name="status_idx",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="revokedtoken",
            index=models.Index(
                condition=models.Q(("status_idx__isnull", False)),
                fields=["status_idx"],
                name="oidc_revoked_status",
            ),
        ),
        migrations.RunSQL(
            "CREATE SEQUENCE oidc_status_block", reverse_sql="DROP SEQUENCE oidc_status_block"
        ),
        migrations.RunSQL(
            [f"DROP FUNCTION {_PREVIOUS.SIGNATURE}", FUNCTION],
            reverse_sql=[f"DROP FUNCTION {SIGNATURE}", OLD_FUNCTION],
        ),
        migrations.RunSQL(REVOKED, reverse_sql="DROP FUNCTION oidc_status_revoked(bigint, bigint)"),
    ]
