"""The beat schedule of the attestation job (edit it in the admin)."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0006_sponsors"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Agent attestation (warn sponsors 7 days ahead, suspend lapsed agents)",
            task="agents.tasks.attestations_enforce_all_task",
            every=1,
            period="hours",
        ),
    ]
