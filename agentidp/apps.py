"""App config for the cross-cutting project package."""

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class AgentIdPConfig(AppConfig):
    """Registers database grants after migrations and the strict-tenancy query guard."""

    name = "agentidp"
    verbose_name = "AgentIdP platform"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from agentidp import checks, secrets, tenancy  # noqa: F401 - checks register themselves

        if not settings.AGENTIDP["VAULT"]["ADDR"] and not secrets.local_store_allowed():
            raise ImproperlyConfigured(
                "VAULT_ADDR is unset and the local secret store is for development only: set "
                "VAULT_ADDR (with VAULT_TOKEN or AppRole) or AGENTIDP_ALLOW_LOCAL_SECRETS=1"
            )

        from agentidp.admin import admin_site_configure

        admin_site_configure()
        post_migrate.connect(tenancy.grant_application_privileges, sender=self)
        connection_created.connect(tenancy.install_query_guard)
