"""The audit table's single-column organization index goes: its three composite indexes all
start with the organization. One index insertion less per event (every issued token appends
one); measured at about 0.07 ms of PostgreSQL CPU per token."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0003_audit_append_function"),
        ("organizations", "0003_token_usage"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="organizations.organization",
            ),
        ),
    ]
