import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def sponsors_assign(apps: object, schema_editor: object) -> None:
    """Every existing agent gets its organization's longest-standing active owner as sponsor,
    attested now (its first attestation falls due one period later)."""
    agent_model = apps.get_model("agents", "Agent")  # type: ignore[attr-defined]
    membership_model = apps.get_model("organizations", "StaffMembership")  # type: ignore[attr-defined]
    alias = schema_editor.connection.alias  # type: ignore[attr-defined]
    owners: dict[object, int] = {}
    for membership in (
        membership_model.objects.using(alias)
        .filter(role="owner", user__is_active=True)
        .order_by("-created_at", "-id")
    ):
        owners[membership.organization_id] = membership.user_id  # the oldest is written last
    now = timezone.now()
    for organization_id, user_id in owners.items():
        agent_model.objects.using(alias).filter(
            organization_id=organization_id, sponsor__isnull=True
        ).update(sponsor_id=user_id)
    agent_model.objects.using(alias).filter(attested_at__isnull=True).update(attested_at=now)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0005_delegation"),
        ("organizations", "0007_attestation_period"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="attestation_warned_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="agent",
            name="attested_at",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="When its sponsor last attested that it is still needed.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="sponsor",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="sponsored_agents",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(sponsors_assign, migrations.RunPython.noop),
    ]
