"""App config for federation."""

from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Trusted partner issuers, verification of their tokens, and exchange for local ones."""

    name = "federation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.trust import delegation_trust_register
        from federation.grants import JWT_BEARER, federated_grant
        from federation.principals import federated_principal
        from federation.selectors import local_delegation_trust
        from oidc.extensions import delegated_resolver_register, grant_type_register
        from oidc.tokens import TOKEN_EXCHANGE

        grant_type_register(JWT_BEARER, federated_grant)
        grant_type_register(TOKEN_EXCHANGE, federated_grant)
        delegated_resolver_register(federated_principal)
        delegation_trust_register(local_delegation_trust)
