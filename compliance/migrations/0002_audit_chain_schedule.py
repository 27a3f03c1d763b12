"""Schedule the hourly audit-chain verification in django-celery-beat (editable in the admin)."""

from django.db import migrations

TASK_NAME = "Verify audit chains (all organizations)"


def create_schedule(apps, schema_editor):
    alias = schema_editor.connection.alias
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    hourly, _ = IntervalSchedule.objects.using(alias).get_or_create(every=1, period="hours")
    PeriodicTask.objects.using(alias).get_or_create(
        name=TASK_NAME,
        defaults={"task": "compliance.tasks.audit_chain_verify_all_task", "interval": hourly},
    )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.using(schema_editor.connection.alias).filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
