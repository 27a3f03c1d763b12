"""App config for DIDs."""

from django.apps import AppConfig


class DidConfig(AppConfig):
    """did:web identifiers for agents and this deployment, their documents and resolution."""

    name = "did"
    verbose_name = "Decentralized identifiers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from agentidp.lifecycle import on_agent_registered, on_agent_status_change
        from agents.models import Agent
        from credentials.keys import held_keys_from
        from did.models import AgentDidKey
        from did.selectors import did_held_keys
        from did.services import (
            did_documents_follow_change,
            did_follows_agent_status,
            did_issue_on_registration,
        )
        from organizations.models import Organization

        held_keys_from(did_held_keys)  # an agent may authenticate with its own DID key
        on_agent_registered(did_issue_on_registration)
        on_agent_status_change(did_follows_agent_status)
        for model in (Agent, AgentDidKey, Organization):
            post_save.connect(did_documents_follow_change, sender=model, weak=False)
            post_delete.connect(did_documents_follow_change, sender=model, weak=False)
