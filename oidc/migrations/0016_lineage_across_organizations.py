"""Lineage revocation follows a delegation tree across organizations: a token exchanged by an
agent of another organization (one its subject's organization trusts, ``agentidp.trust``) is
recorded in the caller's organization, below a parent in the subject's. ``oidc_lineage_revoke``
walks the tree from the roots the caller's organization revoked, in every organization, and
records each live token below them as revoked in its own organization (SECURITY DEFINER, as
the owner: it follows only parent links from those roots and reveals their ids and expiry)."""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION oidc_lineage_revoke(p_roots uuid[], p_now timestamptz, p_reason text)
RETURNS TABLE (jti uuid, expires timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH RECURSIVE tree(jti) AS (
        SELECT t.jti FROM public.oidc_accesstoken t WHERE t.parent_jti = ANY(p_roots)
      UNION
        SELECT t.jti FROM public.oidc_accesstoken t JOIN tree ON t.parent_jti = tree.jti
    ), live AS (
        SELECT t.organization_id, t.jti, t.expires, t.status_idx
          FROM public.oidc_accesstoken t JOIN tree USING (jti)
         WHERE t.expires > p_now
    ), recorded AS (
        INSERT INTO public.oidc_revokedtoken (organization_id, jti, expires_at, revoked_at,
                                              reason, status_idx)
        SELECT organization_id, jti, expires, p_now, p_reason, status_idx FROM live
        ON CONFLICT (jti) DO NOTHING
    )
    SELECT jti, expires FROM live
$$
"""


class Migration(migrations.Migration):
    dependencies = [("oidc", "0015_token_exchange_function")]

    operations = [
        migrations.RunSQL(
            FUNCTION, reverse_sql="DROP FUNCTION oidc_lineage_revoke(uuid[], timestamptz, text)"
        )
    ]
