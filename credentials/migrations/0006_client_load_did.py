"""``credentials_client_load`` also returns the agent's DID, for the id_token's ``did`` claim."""

from importlib import import_module

from django.db import migrations

BEFORE = import_module("credentials.migrations.0005_client_load_identity").FUNCTION
PREVIOUS = "DROP FUNCTION credentials_client_load(text)"

FUNCTION = """
CREATE FUNCTION credentials_client_load(p_client_id text)
RETURNS TABLE (id bigint, client_id varchar, agent_id uuid, allowed_scopes varchar[],
               agent_status varchar, organization_id uuid, organization_status varchar,
               plan varchar, max_tokens_per_month bigint, access_token_lifetime_seconds integer,
               secrets json, agent_name varchar, capabilities varchar[],
               id_token_signed_response_alg varchar, agent_did varchar)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.organization_id',
        coalesce(credentials_client_organization(p_client_id)::text, ''), true);
    RETURN QUERY
    SELECT c.id, c.client_id, c.agent_id, c.allowed_scopes, a.status,
           o.id, o.status, o.plan, o.max_tokens_per_month, o.access_token_lifetime_seconds,
           coalesce(json_agg(json_build_array(s.id, s.digest, s.expires_at))
                    FILTER (WHERE s.id IS NOT NULL), '[]'),
           a.name, a.capabilities, c.id_token_signed_response_alg, a.did
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
    dependencies = [
        ("credentials", "0005_client_load_identity"),
        ("agents", "0004_agent_card_fields"),
    ]

    operations = [migrations.RunSQL([PREVIOUS, FUNCTION], reverse_sql=[PREVIOUS, BEFORE])]
