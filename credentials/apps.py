"""App config for credentials."""

from django.apps import AppConfig


class CredentialsConfig(AppConfig):
    """Agents' OAuth clients and their client secrets."""

    name = "credentials"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.lifecycle import on_agent_status_change
        from agentidp.stamps import stamp_on_change
        from credentials.models import Client, ClientSecret
        from credentials.services import credentials_follow_agent_status

        on_agent_status_change(credentials_follow_agent_status)
        stamp_on_change(Client, ClientSecret)
