"""App config for DIDs."""

from django.apps import AppConfig


class DidConfig(AppConfig):
    """did:web identifiers for agents and this deployment, their documents and resolution."""

    name = "did"
    verbose_name = "Decentralized identifiers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.lifecycle import on_agent_registered, on_agent_status_change
        from did.services import did_follows_agent_status, did_issue_on_registration

        on_agent_registered(did_issue_on_registration)
        on_agent_status_change(did_follows_agent_status)
