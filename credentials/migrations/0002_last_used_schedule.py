"""Schedule the persistence of credentials' last-used times (editable in the admin)."""

from django.db import migrations

TASK_NAME = "Persist credentials' last-used times (all organizations)"


def schedule(apps, schema_editor):
    alias = schema_editor.connection.alias
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.using(alias).get_or_create(every=5, period="minutes")
    PeriodicTask.objects.using(alias).get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "credentials.tasks.credential_last_used_persist_all_task",
            "interval": every,
        },
    )


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.using(schema_editor.connection.alias).filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("credentials", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]
