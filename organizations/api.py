"""Platform API for organizations (scope ``admin:orgs``)."""

from collections.abc import Iterator
from contextlib import contextmanager

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import PageNumberPagination, StrictSerializer, TenantViewSet
from agentidp.boundary import slug_refusal
from agentidp.names import SLUG
from agentidp.schema import problem_responses
from agentidp.tenancy import platform_context
from organizations import services
from organizations.choices import DidKeyAlgorithm, OrganizationStatus, Plan, Scope
from organizations.models import Organization


class OrganizationSerializer(serializers.ModelSerializer[Organization]):
    class Meta:
        model = Organization
        fields = [
            "id",
            "slug",
            "name",
            "plan",
            "max_agents",
            "max_tokens_per_month",
            "status",
            "access_token_lifetime_seconds",
            "credential_grace_seconds",
            "did_key_algorithm",
            "delegation_max_depth",
            "attestation_period_days",
            "assertion_audience_token_endpoint",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class OrganizationCreateSerializer(StrictSerializer):
    slug = serializers.RegexField(
        SLUG.pattern,
        max_length=63,
        help_text="Lowercase ASCII letters, digits and inner hyphens",
        error_messages={"invalid": slug_refusal("") or ""},
    )
    name = serializers.CharField(max_length=200, required=False, default="")
    plan = serializers.ChoiceField(choices=Plan.choices, default=Plan.FREE)
    max_agents = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    max_tokens_per_month = serializers.IntegerField(min_value=0, max_value=10**15, required=False)


class OrganizationUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    plan = serializers.ChoiceField(choices=Plan.choices, required=False)
    max_agents = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    max_tokens_per_month = serializers.IntegerField(min_value=0, max_value=10**15, required=False)
    status = serializers.ChoiceField(
        choices=[OrganizationStatus.ACTIVE, OrganizationStatus.SUSPENDED], required=False
    )
    access_token_lifetime_seconds = serializers.IntegerField(
        min_value=60, max_value=86400, required=False
    )
    credential_grace_seconds = serializers.IntegerField(
        min_value=0, max_value=30 * 86400, required=False
    )
    did_key_algorithm = serializers.ChoiceField(
        choices=DidKeyAlgorithm.choices,
        required=False,
        help_text="The key type its agents' new DID keys get (Ed25519 or P-256).",
    )
    delegation_max_depth = serializers.IntegerField(
        min_value=1, max_value=10, required=False,
        help_text="How many agents a delegation chain may hold unless an agent's policy says.",
    )  # fmt: skip
    attestation_period_days = serializers.IntegerField(
        min_value=7, max_value=3650, required=False,
        help_text="Days between a sponsor's attestations of each agent (default 90).",
    )  # fmt: skip
    assertion_audience_token_endpoint = serializers.BooleanField(
        required=False,
        help_text="Accept private_key_jwt assertions whose aud is the token endpoint's URL "
        "(default: the issuer identifier only).",
    )


@extend_schema_view(
    list=extend_schema(
        responses={200: OrganizationSerializer(many=True), **problem_responses(401, 403)}
    ),
    retrieve=extend_schema(
        responses={200: OrganizationSerializer, **problem_responses(400, 401, 403, 404)}
    ),
    create=extend_schema(
        request=OrganizationCreateSerializer,
        responses={201: OrganizationSerializer, **problem_responses(400, 401, 403, 409)},
    ),
    partial_update=extend_schema(
        request=OrganizationUpdateSerializer,
        responses={200: OrganizationSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
    destroy=extend_schema(responses={204: None, **problem_responses(400, 401, 403, 404, 409)}),
)
class OrganizationViewSet(TenantViewSet):
    """Tenants of this deployment, managed by platform staff across organizations."""

    resource_type = "organization"
    required_scopes = {
        action: Scope.ADMIN_ORGS
        for action in ("list", "retrieve", "create", "partial_update", "destroy")
    }
    serializer_class = OrganizationSerializer
    pagination_class = PageNumberPagination
    queryset = Organization.objects.none()

    @contextmanager
    def platform(self) -> Iterator[None]:
        with platform_context(reason=f"api:organizations:{self.action}", actor=self.principal):
            yield

    def list(self, request: Request) -> Response:
        with self.platform():
            organizations = Organization.objects.exclude(
                status=OrganizationStatus.DELETED
            ).order_by("slug")
            page = self.paginate_queryset(organizations)
            data = OrganizationSerializer(page, many=True).data
        return self.get_paginated_response(data)

    def retrieve(self, request: Request, pk: str) -> Response:
        with self.platform():
            organization = services.organization_get(organization_id=self.lookup_uuid())
            return Response(OrganizationSerializer(organization).data)

    def create(self, request: Request) -> Response:
        payload = OrganizationCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        with self.platform():
            organization = services.organization_create(
                actor=self.principal, **payload.validated_data
            )
            data = OrganizationSerializer(organization).data
        return Response(
            data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/organizations/{organization.id}"},
        )

    def partial_update(self, request: Request, pk: str) -> Response:
        payload = OrganizationUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        new_status = changes.pop("status", None)
        with self.platform():
            organization = services.organization_change(
                actor=self.principal,
                organization_id=self.lookup_uuid(),
                changes=changes,
                status=new_status,
            )
            return Response(OrganizationSerializer(organization).data)

    def destroy(self, request: Request, pk: str) -> Response:
        organization_id = self.lookup_uuid()
        with self.platform():
            services.organization_delete(actor=self.principal, organization_id=organization_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
