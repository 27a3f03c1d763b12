"""One round trip per audit event: lock the chain head, hash, insert, advance the head.

Python renders the event's canonical JSON (the same bytes audit_chain_verify recomputes) with
the two values only the locked head knows cut out: ``prefix || previous_hash || middle ||
sequence || suffix``. The function runs as the caller (RLS applies) and hashes with
PostgreSQL's sha256().
"""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION compliance_audit_append(
    p_organization_id uuid, p_id uuid, p_occurred_at timestamptz, p_actor_type text,
    p_actor_id text, p_action text, p_outcome text, p_subject_type text, p_subject_id text,
    p_data jsonb, p_prefix text, p_middle text, p_suffix text,
    OUT sequence bigint, OUT hash text, OUT previous_hash text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT h.sequence, h.hash INTO sequence, previous_hash
      FROM compliance_auditchainhead h WHERE h.organization_id = p_organization_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO compliance_auditchainhead (organization_id, sequence, hash)
             VALUES (p_organization_id, 0, repeat('0', 64))
        ON CONFLICT (organization_id) DO NOTHING;
        SELECT h.sequence, h.hash INTO sequence, previous_hash
          FROM compliance_auditchainhead h WHERE h.organization_id = p_organization_id FOR UPDATE;
    END IF;
    sequence := sequence + 1;
    hash := encode(sha256(convert_to(
        p_prefix || previous_hash || p_middle || sequence::text || p_suffix, 'UTF8')), 'hex');
    INSERT INTO compliance_auditevent (id, organization_id, sequence, occurred_at, actor_type,
        actor_id, action, outcome, subject_type, subject_id, data, previous_hash, hash)
    VALUES (p_id, p_organization_id, sequence, p_occurred_at, p_actor_type, p_actor_id, p_action,
        p_outcome, p_subject_type, p_subject_id, p_data, compliance_audit_append.previous_hash,
        compliance_audit_append.hash);
    UPDATE compliance_auditchainhead SET sequence = compliance_audit_append.sequence,
        hash = compliance_audit_append.hash WHERE organization_id = p_organization_id;
END
$$
"""


class Migration(migrations.Migration):
    dependencies = [("compliance", "0002_audit_chain_schedule")]

    operations = [
        migrations.RunSQL(
            FUNCTION,
            reverse_sql="DROP FUNCTION compliance_audit_append(uuid, uuid, timestamptz, text, text,"
            " text, text, text, text, jsonb, text, text, text)",
        )
    ]
