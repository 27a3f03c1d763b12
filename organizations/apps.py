"""App config for organizations."""

from django.apps import AppConfig


class OrganizationsConfig(AppConfig):
    """Organizations, their plans and quotas, and staff membership."""

    name = "organizations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.stamps import stamp_on_change
        from organizations.models import Organization

        stamp_on_change(Organization)
