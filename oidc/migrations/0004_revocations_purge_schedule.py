"""Schedule the purge of expired revocation records (editable in the admin)."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0003_durable_revocation"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Purge expired token revocations (all organizations)",
            task="oidc.tasks.revocations_purge_all_task",
            every=1,
            period="hours",
        )
    ]
