"""URL map: the public API paths (no trailing slash), admin, schema, health and metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from agentidp import views
from agents.api import AgentViewSet, OrganizationMemberViewSet
from compliance.api import AuditEventViewSet
from organizations.api import OrganizationViewSet

router = SimpleRouter(trailing_slash=False)
router.register("organizations", OrganizationViewSet, basename="organization")
router.register(
    r"organizations/(?P<organization_pk>[^/]+)/members",
    OrganizationMemberViewSet,
    basename="organization-member",
)
router.register("agents", AgentViewSet, basename="agent")
router.register("audit", AuditEventViewSet, basename="audit")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", include(router.urls)),
]

handler404 = "agentidp.views.not_found"
handler500 = "agentidp.views.server_error"
