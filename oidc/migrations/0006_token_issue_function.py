"""The token endpoint's one write: ``oidc_token_issue``, called in autocommit by the lean path.

One statement that enters the client's organization, re-checks in the database everything the
caller's cached view of the client decided (the secret is live, unexpired and has this digest;
the agent and organization are active; the scopes are allowed; the organization's plan, quota
and token lifetime are the ones the caller used), records the token and appends its
``token.issued`` audit event to the organization's chain (``compliance_audit_append``), all
committed before the caller answers. It returns false, writing nothing, when any check fails:
the caller's cache was stale and the full path must answer.

The secret's row is locked FOR KEY SHARE: a concurrent revocation (which locks it FOR UPDATE)
either commits first, and then this check sees it, or waits for this token to commit, and then
lists it among the secret's live tokens to revoke.

SECURITY INVOKER: it runs as the application role, under RLS.
"""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION oidc_token_issue(
    p_client_pk bigint, p_credential_id uuid, p_digest text, p_scopes text[], p_plan text,
    p_max_tokens_per_month bigint, p_lifetime integer,
    p_checksum text, p_jti uuid, p_scope text, p_expires timestamptz, p_resource jsonb,
    -- compliance_audit_append's arguments, in its order
    p_organization_id uuid, p_event_id uuid, p_occurred_at timestamptz, p_actor_type text,
    p_actor_id text, p_action text, p_outcome text, p_subject_type text, p_subject_id text,
    p_data jsonb, p_prefix text, p_middle text, p_suffix text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.organization_id', p_organization_id::text, true);
    PERFORM 1
       FROM credentials_clientsecret s
       JOIN credentials_client c ON c.id = s.client_id
       JOIN agents_agent a ON a.id = c.agent_id
       JOIN organizations_organization o ON o.id = c.organization_id
      WHERE s.id = p_credential_id AND s.client_id = p_client_pk
        AND s.organization_id = p_organization_id AND s.digest = p_digest
        AND s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > p_occurred_at)
        AND a.status = 'active' AND o.status = 'active'
        AND p_scopes <@ c.allowed_scopes::text[]
        AND o.plan = p_plan AND o.max_tokens_per_month = p_max_tokens_per_month
        AND o.access_token_lifetime_seconds = p_lifetime
        FOR KEY SHARE OF s;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO oidc_accesstoken (organization_id, application_id, token, token_checksum, jti,
                                  scope, expires, resource, created, updated, credential_id)
    VALUES (p_organization_id, p_client_pk, '', p_checksum, p_jti, p_scope, p_expires,
            p_resource, p_occurred_at, p_occurred_at, p_credential_id);
    PERFORM compliance_audit_append(p_organization_id, p_event_id, p_occurred_at, p_actor_type,
        p_actor_id, p_action, p_outcome, p_subject_type, p_subject_id, p_data, p_prefix,
        p_middle, p_suffix);
    RETURN true;
END
$$
"""

SIGNATURE = (
    "oidc_token_issue(bigint, uuid, text, text[], text, bigint, integer, text, uuid, text,"
    " timestamptz, jsonb, uuid, uuid, timestamptz, text, text, text, text, text, text, jsonb,"
    " text, text, text)"
)


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0005_token_table_indexes"),
        ("compliance", "0003_audit_append_function"),
        ("credentials", "0003_client_load_function"),
        ("agents", "0002_durable_revocation"),
    ]

    operations = [migrations.RunSQL(FUNCTION, reverse_sql=f"DROP FUNCTION {SIGNATURE}")]
