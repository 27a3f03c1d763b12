"""App config for organizations."""

from django.apps import AppConfig


class OrganizationsConfig(AppConfig):
    """Organizations, their plans and quotas, and staff membership."""

    name = "organizations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.models import User
        from django.db.models.signals import post_migrate, pre_delete, pre_save

        from agentidp.stamps import stamp_on_change
        from organizations.models import Organization
        from organizations.services import (
            login_deactivation_follow,
            login_deletion_follow,
            staff_group_refresh,
        )

        stamp_on_change(Organization)
        post_migrate.connect(staff_group_refresh, weak=False)
        pre_save.connect(login_deactivation_follow, sender=User, weak=False)
        pre_delete.connect(login_deletion_follow, sender=User, weak=False)
