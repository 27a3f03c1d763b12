"""App config for agents."""

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """The agent registry and its lifecycle."""

    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.stamps import stamp_on_change
        from agents.models import Agent

        stamp_on_change(Agent)
