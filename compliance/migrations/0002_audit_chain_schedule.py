"""Schedule the hourly audit-chain verification in django-celery-beat (editable in the admin)."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Verify audit chains (all organizations)",
            task="compliance.tasks.audit_chain_verify_all_task",
            every=1,
            period="hours",
        )
    ]
