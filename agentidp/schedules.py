"""Beat schedules created by migrations (operators then edit them in the admin)."""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def interval_task(*, name: str, task: str, every: int, period: str) -> migrations.RunPython:
    """A RunPython that creates (and on reversal removes) one interval PeriodicTask."""

    def create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        alias = schema_editor.connection.alias
        interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
        task_model = apps.get_model("django_celery_beat", "PeriodicTask")
        interval, _ = interval_model.objects.using(alias).get_or_create(every=every, period=period)
        task_model.objects.using(alias).get_or_create(
            name=name, defaults={"task": task, "interval": interval}
        )

    def remove(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        task_model = apps.get_model("django_celery_beat", "PeriodicTask")
        task_model.objects.using(schema_editor.connection.alias).filter(name=name).delete()

    return migrations.RunPython(create, remove)
