"""API for the resource registry (scopes ``resources:read`` and ``resources:manage``): the
organization's APIs and MCP servers, and which of their scopes each agent or role may be issued.
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import PageNumberPagination, StrictSerializer, TenantViewSet
from agentidp.errors import ValidationFailed
from agentidp.schema import problem_responses
from credentials.choices import SigningAlgorithm
from oidc import resources
from oidc.models import Resource, ResourceGrant
from organizations.choices import MemberRole, Scope


class ScopeSerializer(StrictSerializer):
    name = serializers.CharField(
        max_length=resources.MAX_SCOPE_NAME,
        help_text="An RFC 6749 scope token, such as tools:call.",
    )
    description = serializers.CharField(
        max_length=resources.MAX_DESCRIPTION, required=False, allow_blank=True, default="",
        help_text="What it lets an agent do: shown to staff and on consent pages.",
    )  # fmt: skip


class ResourceSerializer(serializers.ModelSerializer[Resource]):
    scopes = ScopeSerializer(many=True, read_only=True)
    metadata_url = serializers.SerializerMethodField(
        help_text="Where this deployment serves the resource's RFC 9728 metadata (null unless "
        "metadata_hosted): the resource_metadata its 401s may name."
    )

    class Meta:
        model = Resource
        fields = ["id", "identifier", "name", "scopes", "access_token_lifetime",
                  "signing_algorithm", "dpop_required", "metadata_hosted", "metadata_url",
                  "created_by", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = fields

    def get_metadata_url(self, resource: Resource) -> str | None:
        return resources.hosted_metadata_url(resource) if resource.metadata_hosted else None


class ResourceInputSerializer(StrictSerializer):
    identifier = serializers.CharField(
        max_length=2048,
        help_text="The resource indicator agents send as resource= (RFC 8707) and tokens name "
        "as aud: an absolute https URI without a fragment (http only on a loopback host where "
        "the deployment allows it), unique on the deployment and outside its own origin.",
    )
    name = serializers.CharField(max_length=200)
    scopes = ScopeSerializer(many=True, required=False, default=list)
    access_token_lifetime = serializers.IntegerField(
        min_value=60, max_value=resources.MAX_LIFETIME, required=False, allow_null=True,
        default=None,
        help_text="Seconds its tokens live (null: the organization's lifetime, which also "
        "caps this).",
    )  # fmt: skip
    signing_algorithm = serializers.ChoiceField(
        choices=SigningAlgorithm.choices, required=False, default=SigningAlgorithm.ES256
    )
    dpop_required = serializers.BooleanField(
        required=False, default=False,
        help_text="Issue only DPoP-bound tokens (RFC 9449) for it.",
    )  # fmt: skip
    metadata_hosted = serializers.BooleanField(
        required=False, default=False,
        help_text="Serve its RFC 9728 metadata here (public, metadata_url), for a server that "
        "does not serve its own.",
    )  # fmt: skip


class ResourceUpdateSerializer(ResourceInputSerializer):
    identifier = None  # type: ignore[assignment]  # it cannot change: tokens name it


class GrantSerializer(serializers.ModelSerializer[ResourceGrant]):
    class Meta:
        model = ResourceGrant
        fields = ["id", "resource", "agent", "role", "scopes", "created_at", "updated_at"]
        read_only_fields = fields


class GrantInputSerializer(StrictSerializer):
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=resources.MAX_SCOPE_NAME),
        max_length=resources.MAX_SCOPES,
        help_text="The resource's scopes it may be issued; an empty list removes the grant.",
    )


RESOURCE_ERRORS = problem_responses(400, 401, 403, 404)


@extend_schema_view(
    list=extend_schema(responses={200: ResourceSerializer(many=True), **problem_responses(400, 401, 403)}),
    create=extend_schema(
        request=ResourceInputSerializer,
        responses={201: ResourceSerializer, **problem_responses(400, 401, 403, 409)},
    ),
    retrieve=extend_schema(responses={200: ResourceSerializer, **RESOURCE_ERRORS}),
    partial_update=extend_schema(
        request=ResourceUpdateSerializer,
        responses={200: ResourceSerializer, **RESOURCE_ERRORS},
        description="Change a resource; its identifier cannot change. Scopes it no longer "
        "defines leave every grant.",
    ),
    destroy=extend_schema(
        responses={204: None, **RESOURCE_ERRORS},
        description="Remove it and its grants: no new token names it.",
    ),
    grants=extend_schema(
        responses={200: GrantSerializer(many=True), **RESOURCE_ERRORS},
        description="Who may be issued which of its scopes: agents, and roles (every agent "
        "holding the role).",
    ),
)  # fmt: skip
class ResourceViewSet(TenantViewSet):
    """The organization's registered resource servers (APIs, MCP servers)."""

    resource_type = "resource"
    required_scopes = {
        **dict.fromkeys(["list", "retrieve", "grants"], Scope.RESOURCES_READ),
        **dict.fromkeys(["create", "partial_update", "destroy"], Scope.RESOURCES_MANAGE),
    }
    serializer_class = ResourceSerializer
    pagination_class = PageNumberPagination
    queryset = Resource.objects.none()

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(resources.resource_list(organization_id=self.organization_id))
        return self.get_paginated_response(ResourceSerializer(page or [], many=True).data)

    def create(self, request: Request) -> Response:
        payload = ResourceInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        resource = resources.resource_create(
            actor=self.principal, organization_id=self.organization_id, **payload.validated_data
        )
        return Response(ResourceSerializer(resource).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        resource = resources.resource_get(
            organization_id=self.organization_id, resource_id=self.lookup_uuid()
        )
        return Response(ResourceSerializer(resource).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        if isinstance(request.data, dict) and "identifier" in request.data:
            raise ValidationFailed(
                "The identifier cannot change.",
                errors={"identifier": ["Register the new identifier and delete this one."]},
            )
        payload = ResourceUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = {k: v for k, v in payload.validated_data.items() if k in request.data}
        resource = resources.resource_update(
            actor=self.principal, organization_id=self.organization_id,
            resource_id=self.lookup_uuid(), changes=changes,
        )  # fmt: skip
        return Response(ResourceSerializer(resource).data)

    def destroy(self, request: Request, pk: str) -> Response:
        resources.resource_delete(
            actor=self.principal, organization_id=self.organization_id,
            resource_id=self.lookup_uuid(),
        )  # fmt: skip
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["get"], pagination_class=None)
    def grants(self, request: Request, pk: str) -> Response:
        grants = resources.grant_list(
            organization_id=self.organization_id, resource_id=self.lookup_uuid()
        )
        return Response(GrantSerializer(grants, many=True).data)


def _grant_response(grant: ResourceGrant | None) -> Response:
    if grant is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(GrantSerializer(grant).data)


GRANT_RESPONSES = {200: GrantSerializer, 204: None, **RESOURCE_ERRORS}


@extend_schema_view(
    update=extend_schema(
        request=GrantInputSerializer, responses=GRANT_RESPONSES,
        description="Set which of the resource's scopes the agent may be issued (200 with the "
        "grant); an empty list removes the grant (204).",
    ),
    destroy=extend_schema(responses={204: None, **RESOURCE_ERRORS}),
)  # fmt: skip
class ResourceAgentGrantViewSet(TenantViewSet):
    """One agent's grant on a resource: ``/resources/{id}/grants/{agent_id}``."""

    resource_type = "resource_grant"
    required_scopes = dict.fromkeys(["update", "destroy"], Scope.RESOURCES_MANAGE)
    serializer_class = GrantSerializer
    queryset = ResourceGrant.objects.none()

    def _set(self, scopes: object) -> ResourceGrant | None:
        return resources.grant_set(
            actor=self.principal, organization_id=self.organization_id,
            resource_id=self.lookup_uuid("resource_pk"), agent_id=self.lookup_uuid(),
            scopes=scopes,
        )  # fmt: skip

    def update(self, request: Request, resource_pk: str, pk: str) -> Response:
        payload = GrantInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return _grant_response(self._set(payload.validated_data["scopes"]))

    def destroy(self, request: Request, resource_pk: str, pk: str) -> Response:
        self._set([])
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    update=extend_schema(
        request=GrantInputSerializer, responses=GRANT_RESPONSES,
        parameters=[OpenApiParameter("role", str, OpenApiParameter.PATH, enum=MemberRole.values)],
        description="Set which of the resource's scopes every agent holding the role may be "
        "issued; an empty list removes the grant (204).",
    ),
    destroy=extend_schema(
        responses={204: None, **RESOURCE_ERRORS},
        parameters=[OpenApiParameter("role", str, OpenApiParameter.PATH, enum=MemberRole.values)],
    ),
)  # fmt: skip
class ResourceRoleGrantViewSet(TenantViewSet):
    """A role's grant on a resource: ``/resources/{id}/roles/{role}``."""

    lookup_url_kwarg = "role"
    resource_type = "resource_grant"
    required_scopes = dict.fromkeys(["update", "destroy"], Scope.RESOURCES_MANAGE)
    serializer_class = GrantSerializer
    queryset = ResourceGrant.objects.none()

    def _set(self, scopes: object) -> ResourceGrant | None:
        return resources.grant_set(
            actor=self.principal, organization_id=self.organization_id,
            resource_id=self.lookup_uuid("resource_pk"), role=str(self.kwargs["role"]),
            scopes=scopes,
        )  # fmt: skip

    def update(self, request: Request, resource_pk: str, role: str) -> Response:
        payload = GrantInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return _grant_response(self._set(payload.validated_data["scopes"]))

    def destroy(self, request: Request, resource_pk: str, role: str) -> Response:
        self._set([])
        return Response(status=status.HTTP_204_NO_CONTENT)
