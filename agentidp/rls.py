"""Row-level security for a tenant table, as a migration operation (plain SQL, per the house
style: the policy is written in the migration that creates the table)."""

from django.db import migrations


def tenant_isolation(table: str) -> migrations.RunSQL:
    """RLS on ``table``: rows of the organization the transaction acts for, and no other."""
    return migrations.RunSQL(
        sql=[
            f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
            f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
            f"""CREATE POLICY {table}_tenant_isolation ON "{table}"
               USING (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid)
               WITH CHECK (organization_id = NULLIF(current_setting('app.organization_id', true), '')::uuid)""",
        ],
        reverse_sql=[
            f'DROP POLICY {table}_tenant_isolation ON "{table}"',
            f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY',
            f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY',
        ],
    )
