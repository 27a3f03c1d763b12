"""App config for agents."""

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """The agent registry and its lifecycle."""

    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.lifecycle import on_staff_access_lost
        from agentidp.stamps import stamp_on_change
        from agents.models import Agent
        from agents.services import sponsor_access_follow

        stamp_on_change(Agent)
        on_staff_access_lost(sponsor_access_follow)
