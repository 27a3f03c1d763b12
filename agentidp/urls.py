"""URL map: the public API paths (no trailing slash), admin, schema, health and metrics."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from agentidp import views
from agentidp.metrics import metrics
from agents.api import AgentViewSet, OrganizationMemberViewSet
from compliance.api import AuditEventViewSet, ComplianceViewSet
from credentials.api import (
    AgentClientViewSet,
    AgentCredentialViewSet,
    AgentKeyViewSet,
    AgentScopesViewSet,
)
from did import views as did_views
from did.api import AgentDidKeysViewSet
from federation.api import FederationPartnerViewSet, FederationViewSet, PartnerResourceViewSet
from oidc import views as oidc_views
from oidc.api import ResourceAgentGrantViewSet, ResourceRoleGrantViewSet, ResourceViewSet
from organizations.api import OrganizationViewSet
from webhooks.api import WebhookDeliveryViewSet, WebhookViewSet

router = SimpleRouter(trailing_slash=False)
router.register("organizations", OrganizationViewSet, basename="organization")
router.register(
    r"organizations/(?P<organization_pk>[^/]+)/members",
    OrganizationMemberViewSet,
    basename="organization-member",
)
router.register("agents", AgentViewSet, basename="agent")
router.register(
    r"agents/(?P<agent_pk>[^/]+)/credentials", AgentCredentialViewSet, basename="agent-credential"
)
router.register(r"agents/(?P<agent_pk>[^/]+)/scopes", AgentScopesViewSet, basename="agent-scopes")
router.register(r"agents/(?P<agent_pk>[^/]+)/keys", AgentKeyViewSet, basename="agent-key")
router.register(
    r"agents/(?P<agent_pk>[^/]+)/did/keys", AgentDidKeysViewSet, basename="agent-did-keys"
)
router.register("resources", ResourceViewSet, basename="resource")
router.register(
    r"resources/(?P<resource_pk>[^/]+)/grants", ResourceAgentGrantViewSet,
    basename="resource-grant",
)  # fmt: skip
router.register(
    r"resources/(?P<resource_pk>[^/]+)/roles", ResourceRoleGrantViewSet,
    basename="resource-role-grant",
)  # fmt: skip
router.register("audit", AuditEventViewSet, basename="audit")
router.register("compliance", ComplianceViewSet, basename="compliance")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("federation/partners", FederationPartnerViewSet, basename="federation-partner")
router.register(
    r"federation/partners/(?P<partner_pk>[^/]+)/resources", PartnerResourceViewSet,
    basename="federation-partner-resource",
)  # fmt: skip
router.register("federation", FederationViewSet, basename="federation")
router.register(
    r"webhooks/(?P<webhook_pk>[^/]+)/deliveries",
    WebhookDeliveryViewSet,
    basename="webhook-delivery",
)

urlpatterns = [
    path("", views.home, name="home"),
    # A new member sets their password from the one-time link they were given (Django's own
    # views and the admin's templates), then logs in to the admin.
    path(
        "admin/password/set/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(success_url="/admin/password/set/done/"),
        name="password_reset_confirm",
    ),
    path(
        "admin/password/set/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("oauth2/token", oidc_views.TokenView.as_view(), name="oauth2-token"),
    path("oauth2/revoke", oidc_views.RevokeTokenView.as_view(), name="oauth2-revoke"),
    path("oauth2/introspect", oidc_views.IntrospectView.as_view(), name="oauth2-introspect"),
    path(".well-known/jwks.json", oidc_views.jwks, name="jwks"),
    path("oauth2/status/<int:list_number>", oidc_views.status_list, name="oauth2-status-list"),
    path("agent-info", oidc_views.AgentInfoView.as_view(), name="agent-info"),
    path(
        ".well-known/oauth-authorization-server",
        oidc_views.authorization_server_metadata,
        name="oauth-authorization-server",
    ),
    path(
        ".well-known/openid-configuration",
        oidc_views.authorization_server_metadata,
        name="openid-configuration",
    ),
    # RFC 9728: the platform API's metadata, at the path its resource ({issuer}/api) derives
    # and at the bare well-known path
    path(
        ".well-known/oauth-protected-resource/api",
        oidc_views.ProtectedResourceMetadataView.as_view(),
        name="oauth-protected-resource-api",
    ),
    path(
        ".well-known/oauth-protected-resource",
        oidc_views.ProtectedResourceMetadataView.as_view(),
        name="oauth-protected-resource",
    ),
    # RFC 9728 metadata this deployment hosts for a registered resource (metadata_hosted)
    path(
        "resources/<uuid:resource_id>/oauth-protected-resource",
        oidc_views.hosted_resource_metadata,
        name="resource-hosted-metadata",
    ),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics, name="prometheus-django-metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path(
        "agents/<str:agent_pk>/client",
        AgentClientViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="agent-client",
    ),
    path(".well-known/did.json", did_views.instance_did_document, name="did-instance"),
    path("did.json", did_views.instance_did_document, name="did-instance-path"),
    path("agents/<str:agent_pk>/did", did_views.agent_did_document, name="agent-did"),
    path("agents/<str:agent_pk>/did.json", did_views.agent_did_document, name="agent-did-json"),
    path("agents/<str:agent_pk>/did/card", did_views.agent_card, name="agent-did-card"),
    path(
        "agents/<str:agent_pk>/did/resolve", did_views.agent_did_resolve, name="agent-did-resolve"
    ),
    path("", include(router.urls)),
]

handler400 = "agentidp.views.bad_request"
handler403 = "agentidp.views.permission_denied"
handler404 = "agentidp.views.not_found"
handler500 = "agentidp.views.server_error"
