"""App config for the cross-cutting project package."""

from django.apps import AppConfig


class AgentIdPConfig(AppConfig):
    """Registers database grants after migrations and the strict-tenancy query guard."""

    name = "agentidp"
    verbose_name = "AgentIdP platform"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from agentidp import tenancy

        post_migrate.connect(tenancy.grant_application_privileges, sender=self)
        connection_created.connect(tenancy.install_query_guard)
