"""Beat schedules of the secrets-rotation and outbox-health jobs (edit them in the admin)."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0007_job_runs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Secrets rotation (expiring credentials, signing and DID keys, Vault lease)",
            task="compliance.tasks.secrets_rotation_task",
            every=1,
            period="hours",
        ),
        interval_task(
            name="Outbox health (pending deliveries, relay lag, dead letters)",
            task="compliance.tasks.outbox_health_task",
            every=5,
            period="minutes",
        ),
    ]
