"""Schedule the persistence of credentials' last-used times (editable in the admin)."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("credentials", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Persist credentials' last-used times (all organizations)",
            task="credentials.tasks.credential_last_used_persist_all_task",
            every=5,
            period="minutes",
        )
    ]
