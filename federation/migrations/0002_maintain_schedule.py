"""Schedule federation's upkeep in django-celery-beat (editable in the admin): every minute it
marks partners past their expiry expired, refreshes partners' keys ahead of their cache TTL and
forgets exchanged assertions that have expired."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Federation: expire partners and refresh their keys",
            task="federation.tasks.partners_maintain_all_task",
            every=60,
            period="seconds",
        )
    ]
