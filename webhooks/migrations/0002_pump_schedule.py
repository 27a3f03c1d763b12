"""Schedule the webhooks pump in django-celery-beat (editable in the admin): every 5 seconds it
queues relays and senders for due work, which is how retries come due."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Webhooks: relay events and send due deliveries",
            task="webhooks.tasks.webhooks_pump_task",
            every=5,
            period="seconds",
        )
    ]
