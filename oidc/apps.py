"""App config for the authorization server."""

from django.apps import AppConfig


class OidcConfig(AppConfig):
    """Token, revocation and introspection endpoints, signing keys, JWKS and discovery."""

    name = "oidc"
    verbose_name = "Authorization server"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.lifecycle import on_agent_status_change, on_credential_revocation
        from agentidp.metrics import scrape_time_collector
        from oidc.keys import SigningKeyAge
        from oidc.services import tokens_follow_agent_status, tokens_follow_credential_revocation

        on_agent_status_change(tokens_follow_agent_status)
        on_credential_revocation(tokens_follow_credential_revocation)
        scrape_time_collector(SigningKeyAge())
