"""The lean path of token exchange between an organization's agents: ``oidc_token_exchange``,
one autocommit statement like ``oidc_token_issue`` (whose checks, insert and audit append it
shares), that also re-checks in the database what the caller's cached view of the subject
agent's delegation policy decided: the subject agent is active, not the caller, has issued no
revocation since the subject token (``tokens_not_before``), lets the caller act for it, lets
these scopes be delegated and allows a chain this deep; every earlier actor of the chain is
still active; the subject token is not revoked. It returns false, writing nothing, when any
check fails, and the full path answers with the reason.

``oidc_delegation_parent_live`` orders a new delegated token and a revocation of its parent's
tree: it takes the organization's audit chain head (which every revocation holds before it
reads the tree, and which the token's own audit event takes anyway) before it reads whether
the parent is revoked, so either the revocation's tree includes the new token or the new token
sees its parent revoked. Both paths of the exchange call it.
"""

from importlib import import_module

from django.db import migrations

ISSUE = import_module("oidc.migrations.0014_status_lists").FUNCTION

PARENT_LIVE = """
CREATE FUNCTION oidc_delegation_parent_live(p_organization_id uuid, p_parent_jti uuid)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM compliance_auditchainhead h
      WHERE h.organization_id = p_organization_id FOR UPDATE;
    -- a new statement, a new snapshot: a revocation that held the head has committed
    RETURN NOT EXISTS (SELECT 1 FROM oidc_revokedtoken r WHERE r.jti = p_parent_jti);
END
$$
"""

CHECKS = """    PERFORM 1
       FROM agents_agent a
       JOIN organizations_organization o ON o.id = a.organization_id
       JOIN credentials_client c ON c.id = p_client_pk
      WHERE a.id = p_subject_agent AND a.organization_id = p_organization_id
        AND a.status = 'active' AND a.id <> c.agent_id
        AND (a.tokens_not_before IS NULL
             OR extract(epoch FROM a.tokens_not_before) <= p_subject_iat)
        AND (a.delegation_actors ? '*' OR a.delegation_actors ? c.agent_id::text)
        AND (cardinality(a.delegation_scopes) = 0 OR p_scopes <@ a.delegation_scopes::text[])
        AND p_depth <= least(10, coalesce(nullif(a.delegation_max_depth, 0),
                                          o.delegation_max_depth));
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF (SELECT count(*) FROM agents_agent a
         WHERE a.id = ANY(p_chain) AND a.organization_id = p_organization_id
           AND a.status = 'active') <> cardinality(p_chain) THEN
        RETURN false;
    END IF;
    IF NOT oidc_delegation_parent_live(p_organization_id, p_parent_jti) THEN
        RETURN false;
    END IF;
    INSERT INTO oidc_accesstoken"""

FUNCTION = (
    ISSUE.replace("CREATE FUNCTION oidc_token_issue(", "CREATE FUNCTION oidc_token_exchange(")
    .replace(
        "p_status_idx bigint)",
        "p_status_idx bigint,\n"
        "    -- the delegation: who for, the token exchanged, its iat, the chain\n"
        "    p_subject_agent uuid, p_parent_jti uuid, p_subject_iat double precision,\n"
        "    p_depth integer, p_chain uuid[])",
    )
    .replace("    INSERT INTO oidc_accesstoken", CHECKS)
    .replace("p_credential_id, p_status_idx);", "p_credential_id, p_status_idx, p_parent_jti);")
    .replace("status_idx)", "status_idx, parent_jti)")
)
assert FUNCTION.count("p_parent_jti") == 3  # noqa: S101 - the replacements all applied
assert FUNCTION.count("oidc_token_issue") == 0  # noqa: S101
SIGNATURE = (
    "oidc_token_exchange(bigint, uuid, text, text[], text, bigint, integer, text, uuid, text,"
    " timestamptz, jsonb, uuid, uuid, timestamptz, text, text, text, text, text, text, jsonb,"
    " text, text, text, bigint, uuid, uuid, double precision, integer, uuid[])"
)


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0014_status_lists"),
        ("agents", "0007_attestation_schedule"),
        ("compliance", "0003_audit_append_function"),
    ]

    operations = [
        migrations.RunSQL(
            PARENT_LIVE,
            reverse_sql="DROP FUNCTION oidc_delegation_parent_live(uuid, uuid)",
        ),
        migrations.RunSQL(FUNCTION, reverse_sql=f"DROP FUNCTION {SIGNATURE}"),
    ]
