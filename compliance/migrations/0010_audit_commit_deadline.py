"""A transaction that appended an audit event during a request commits only before its
``app.commit_deadline`` (set by the append, transaction-local): a statement that reached a
frozen server and runs only when the server resumes, long after its client was answered 503,
is refused at commit instead of recording (and auditing) what nobody received. A deferred
constraint trigger, so it decides at COMMIT; outside requests the setting is unset and the
trigger does nothing."""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION compliance_audit_commit_deadline() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deadline text := current_setting('app.commit_deadline', true);
BEGIN
    IF deadline IS NOT NULL AND deadline <> '' AND clock_timestamp() > deadline::timestamptz THEN
        RAISE EXCEPTION 'commit refused: past its deadline (%), its client stopped waiting',
            deadline USING ERRCODE = 'query_canceled';
    END IF;
    RETURN NULL;
END
$$
"""


class Migration(migrations.Migration):
    dependencies = [("compliance", "0009_checkpoint_chain")]

    operations = [
        migrations.RunSQL(
            [
                FUNCTION,
                """CREATE CONSTRAINT TRIGGER compliance_auditevent_commit_deadline
                   AFTER INSERT ON compliance_auditevent DEFERRABLE INITIALLY DEFERRED
                   FOR EACH ROW EXECUTE FUNCTION compliance_audit_commit_deadline()""",
            ],
            reverse_sql=[
                "DROP TRIGGER compliance_auditevent_commit_deadline ON compliance_auditevent",
                "DROP FUNCTION compliance_audit_commit_deadline()",
            ],
        )
    ]
