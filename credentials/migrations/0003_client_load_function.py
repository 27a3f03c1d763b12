"""The token endpoint's first read in one round trip: enter the client's organization, then
read the client, its agent, organization and live secrets under RLS (SECURITY INVOKER)."""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION credentials_client_load(p_client_id text)
RETURNS TABLE (id bigint, client_id varchar, agent_id uuid, allowed_scopes varchar[],
               agent_status varchar, organization_id uuid, organization_status varchar,
               plan varchar, max_tokens_per_month bigint, access_token_lifetime_seconds integer,
               secrets json)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.organization_id',
        coalesce(credentials_client_organization(p_client_id)::text, ''), true);
    RETURN QUERY
    SELECT c.id, c.client_id, c.agent_id, c.allowed_scopes, a.status,
           o.id, o.status, o.plan, o.max_tokens_per_month, o.access_token_lifetime_seconds,
           coalesce(json_agg(json_build_array(s.id, s.digest, s.expires_at))
                    FILTER (WHERE s.id IS NOT NULL), '[]')
      FROM credentials_client c
      JOIN agents_agent a ON a.id = c.agent_id AND a.organization_id = c.organization_id
      JOIN organizations_organization o ON o.id = c.organization_id
      LEFT JOIN credentials_clientsecret s
             ON s.client_id = c.id AND s.organization_id = c.organization_id
            AND s.revoked_at IS NULL
     WHERE c.client_id = p_client_id
     GROUP BY c.id, a.id, o.id;
END
$$
"""


class Migration(migrations.Migration):
    dependencies = [("credentials", "0002_last_used_schedule")]

    operations = [
        migrations.RunSQL(FUNCTION, reverse_sql="DROP FUNCTION credentials_client_load(text)")
    ]
