"""Checkpoints form a chain: each has a number (1, 2, 3, ... per organization) and names the
size and root of the one before it. Existing checkpoints are numbered in tree-size order and
linked to their predecessors (their signatures predate the chain and do not cover the link);
the append-only trigger is set aside for that one backfill, as the owner."""

from django.db import migrations, models

EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

BACKFILL = """
ALTER TABLE compliance_auditcheckpoint DISABLE TRIGGER compliance_auditcheckpoint_append_only;
WITH ordered AS (
    SELECT id,
           row_number() OVER w AS number,
           COALESCE(lag(tree_size) OVER w, 0) AS previous_tree_size,
           COALESCE(lag(root_hash) OVER w,
                    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855') AS previous_root_hash
      FROM compliance_auditcheckpoint
    WINDOW w AS (PARTITION BY organization_id ORDER BY tree_size, published_at)
)
UPDATE compliance_auditcheckpoint c
   SET number = o.number, previous_tree_size = o.previous_tree_size,
       previous_root_hash = o.previous_root_hash
  FROM ordered o WHERE o.id = c.id;
ALTER TABLE compliance_auditcheckpoint ENABLE TRIGGER compliance_auditcheckpoint_append_only;
"""


class Migration(migrations.Migration):
    dependencies = [("compliance", "0008_compliance_job_schedules")]

    operations = [
        migrations.AddField(
            model_name="auditcheckpoint",
            name="number",
            field=models.PositiveBigIntegerField(
                null=True,
                help_text="Its place in the organization's chain of checkpoints: 1, 2, 3, ...",
            ),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="previous_tree_size",
            field=models.PositiveBigIntegerField(
                default=0, help_text="The tree size of the checkpoint before it (0 for the first)."
            ),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="previous_root_hash",
            field=models.CharField(
                default=EMPTY_ROOT,
                help_text="The root hash of the checkpoint before it (the empty tree's for the "
                "first).",
                max_length=64,
            ),
            preserve_default=False,
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="auditcheckpoint",
            name="number",
            field=models.PositiveBigIntegerField(
                help_text="Its place in the organization's chain of checkpoints: 1, 2, 3, ..."
            ),
        ),
        migrations.RemoveConstraint(
            model_name="auditcheckpoint", name="compliance_auditcheckpoint_size_once"
        ),
        migrations.AddConstraint(
            model_name="auditcheckpoint",
            constraint=models.UniqueConstraint(
                fields=("organization", "number"), name="compliance_auditcheckpoint_number_once"
            ),
        ),
        migrations.AddIndex(
            model_name="auditcheckpoint",
            index=models.Index(
                fields=["organization", "tree_size"], name="compliance_checkpoint_size"
            ),
        ),
        migrations.AlterModelOptions(name="auditcheckpoint", options={"ordering": ["-number"]}),
    ]
