"""Schedule signing key rotation (every 30 days) and the removal of retired keys whose tokens
have all expired (hourly); operators change both in the admin (django-celery-beat)."""

from django.db import migrations

from agentidp.schedules import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0007_keys_per_algorithm"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        interval_task(
            name="Rotate signing keys",
            task="oidc.tasks.signing_key_rotate_task",
            every=30,
            period="days",
        ),
        interval_task(
            name="Remove expired retired signing keys",
            task="oidc.tasks.signing_keys_remove_expired_task",
            every=1,
            period="hours",
        ),
    ]
