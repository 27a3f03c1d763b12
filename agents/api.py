"""API for agents and organization membership."""

from contextlib import AbstractContextManager, nullcontext
from uuid import UUID

from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import (
    PageNumberPagination,
    QuerySerializer,
    RenderSerializer,
    StrictSerializer,
    TenantViewSet,
)
from agentidp.errors import NotFound
from agentidp.schema import problem_responses
from agentidp.tenancy import platform_context
from agents import services
from agents.choices import AgentStatus
from agents.models import Agent, OrganizationMember
from organizations.choices import AGENT_SCOPES, MemberRole, Scope


class AgentSerializer(RenderSerializer):
    """An agent as the API shows it: rendered on every bearer-authenticated read, so its
    declared fields are bound once (:class:`RenderSerializer`)."""

    id = serializers.UUIDField(read_only=True)
    organization_id = serializers.UUIDField(read_only=True)
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    capabilities = serializers.ListField(child=serializers.CharField(), read_only=True)
    metadata = serializers.JSONField(read_only=True)
    version = serializers.CharField(read_only=True)
    skills = serializers.JSONField(read_only=True)
    authors = serializers.ListField(child=serializers.CharField(), read_only=True)
    did = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=AgentStatus.choices, read_only=True)
    sponsor = serializers.CharField(
        source="sponsor_username", read_only=True, allow_null=True,
        help_text="The username of the person who answers for the agent.",
    )  # fmt: skip
    attested_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When its sponsor last attested it."
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


SKILL_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": services.SKILL_FIELDS["id"]},
        "name": {"type": "string", "minLength": 1, "maxLength": services.SKILL_FIELDS["name"]},
        "description": {"type": "string", "maxLength": services.SKILL_FIELDS["description"]},
        "tags": {
            "type": "array",
            "maxItems": 20,
            "items": {"type": "string", "minLength": 1, "maxLength": 50},
        },
    },
    "required": ["id", "name"],
    "additionalProperties": False,
}


@extend_schema_field(
    {
        "type": "array",
        "maxItems": services.MAX_SKILLS,
        "items": SKILL_SCHEMA,
        "description": "Agent-card skills; each id once (400 otherwise).",
    }
)
class SkillsField(serializers.ListField):
    """What the service checks (``agents.services.skills_checked``), described for the schema."""


class AgentWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, trim_whitespace=True)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    capabilities = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=100), required=False, max_length=64
    )
    metadata = serializers.DictField(required=False)
    version = serializers.CharField(max_length=50, required=False, allow_blank=True)
    skills = SkillsField(
        child=serializers.DictField(), required=False, max_length=services.MAX_SKILLS
    )
    authors = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=200), required=False, max_length=20
    )


class AgentCreateSerializer(AgentWriteSerializer):
    sponsor = serializers.CharField(
        max_length=150, required=False,
        help_text="The username of the person of the organization who answers for the agent;"
        " by default the person creating it, or the creating agent's sponsor.",
    )  # fmt: skip


class SponsorSerializer(StrictSerializer):
    username = serializers.CharField(
        max_length=150, help_text="An active person of the agent's organization."
    )


class AttestSerializer(StrictSerializer):
    agents = serializers.ListField(
        child=serializers.UUIDField(), min_length=1, max_length=1000,
        help_text="The agents whose sponsor attests that they are still needed.",
    )  # fmt: skip


class AttestedSerializer(RenderSerializer):
    attested = serializers.IntegerField(read_only=True)


class KillSwitchSerializer(StrictSerializer):
    sponsor = serializers.CharField(
        max_length=150, required=False,
        help_text="Only this sponsor's agents (a username); all of the organization's without.",
    )  # fmt: skip
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class KillSwitchedSerializer(RenderSerializer):
    suspended = serializers.IntegerField(read_only=True)


class LifecycleSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


@extend_schema_field(
    {"oneOf": [{"type": "string", "enum": ["*"]},
               {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 100}]}
)  # fmt: skip
class DelegationActorsField(serializers.Field):  # type: ignore[type-arg]
    """``"*"`` or a list of agent ids (UUIDs)."""

    default_error_messages = {"invalid": '"*" or a list of at most 100 agent ids.'}

    def to_internal_value(self, data: object) -> str | list[UUID]:
        if data == "*":
            return "*"
        if not isinstance(data, list) or len(data) > 100:
            self.fail("invalid")
        ids: list[UUID] = []
        for item in data:
            if not isinstance(item, str):
                self.fail("invalid")
            try:
                ids.append(UUID(item))
            except ValueError:
                self.fail("invalid")
        return ids

    def to_representation(self, value: object) -> object:
        return value


class DelegationSerializer(StrictSerializer):
    actors = DelegationActorsField(
        help_text='"*" (any of the organization\'s agents) or the ids of the agents that may act'
        " for this one (at most 100)."
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(AGENT_SCOPES)), max_length=50,
        required=False, default=list,
        help_text="The scopes they may be handed (within the token they exchange; empty: any).",
    )  # fmt: skip
    max_depth = serializers.IntegerField(
        min_value=1, max_value=10, allow_null=True, required=False, default=None,
        help_text="How many actors a chain may hold (null: the organization's default, 3).",
    )  # fmt: skip


class AgentListQuerySerializer(QuerySerializer):
    status = serializers.ChoiceField(
        choices=AgentStatus.choices, required=False, help_text="Exact status"
    )
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True,
        help_text="Case-insensitive substring of the name (empty: any)",
    )  # fmt: skip
    ordering = serializers.ChoiceField(
        choices=["name", "-name", "created_at", "-created_at", "status", "-status"],
        required=False,
        default="name",
    )


def _lifecycle_schema() -> dict[str, object]:
    return {
        "request": LifecycleSerializer,
        "responses": {200: AgentSerializer, **problem_responses(400, 401, 403, 404, 409)},
    }


@extend_schema_view(
    list=extend_schema(
        parameters=[AgentListQuerySerializer],
        responses={200: AgentSerializer(many=True), **problem_responses(400, 401, 403)},
    ),
    create=extend_schema(
        request=AgentCreateSerializer,
        responses={201: AgentSerializer, **problem_responses(400, 401, 403, 404, 409)},
        parameters=[
            OpenApiParameter(
                "Location",
                str,
                location=OpenApiParameter.HEADER,
                response=[201],
                description="The new agent's path",
            )
        ],
    ),
    retrieve=extend_schema(
        responses={200: AgentSerializer, **problem_responses(400, 401, 403, 404)}
    ),
    partial_update=extend_schema(
        request=AgentWriteSerializer,
        responses={200: AgentSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
    suspend=extend_schema(**_lifecycle_schema()),  # type: ignore[arg-type]
    reactivate=extend_schema(**_lifecycle_schema()),  # type: ignore[arg-type]
    decommission=extend_schema(**_lifecycle_schema()),  # type: ignore[arg-type]
    delegation=extend_schema(
        responses={200: DelegationSerializer, **problem_responses(400, 401, 403, 404)},
        description="Who may act for the agent through token exchange (RFC 8693), with which"
        " scopes and how long a chain may grow.",
    ),
)
class AgentViewSet(TenantViewSet):
    """The caller's organization's agents and their lifecycle."""

    resource_type = "agent"
    required_scopes = {
        "list": Scope.AGENTS_READ,
        "retrieve": Scope.AGENTS_READ,
        "create": Scope.AGENTS_WRITE,
        "partial_update": Scope.AGENTS_WRITE,
        "suspend": Scope.AGENTS_WRITE,
        "reactivate": Scope.AGENTS_WRITE,
        "decommission": Scope.AGENTS_WRITE,
        "delegation": Scope.AGENTS_READ,
        "delegation_set": Scope.AGENTS_WRITE,
        "sponsor_set": Scope.AGENTS_WRITE,
        "attest": Scope.AGENTS_WRITE,
        "kill_switch": Scope.AGENTS_WRITE,
    }
    serializer_class = AgentSerializer
    pagination_class = PageNumberPagination
    queryset = Agent.objects.none()

    def list(self, request: Request) -> Response:
        query = AgentListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        agents = Agent.objects.filter(organization_id=self.organization_id).select_related(
            "sponsor"
        )
        if "status" in query.validated_data:
            agents = agents.filter(status=query.validated_data["status"])
        if "name" in query.validated_data:
            agents = agents.filter(name__icontains=query.validated_data["name"])
        agents = agents.order_by(query.validated_data["ordering"], "id")
        page = self.paginate_queryset(agents)
        return self.get_paginated_response(AgentSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        payload = AgentCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        agent = services.agent_register(
            actor=self.principal, organization_id=self.organization_id, **payload.validated_data
        )
        return Response(
            AgentSerializer(agent).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/agents/{agent.id}"},
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        agent = services.agent_get(
            organization_id=self.organization_id, agent_id=self.lookup_uuid()
        )
        return Response(AgentSerializer(agent).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        payload = AgentWriteSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        agent = services.agent_update(
            actor=self.principal,
            organization_id=self.organization_id,
            agent_id=self.lookup_uuid(),
            changes=payload.validated_data,
        )
        return Response(AgentSerializer(agent).data)

    def _transition(self, request: Request, service: "services.TransitionService") -> Response:
        payload = LifecycleSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        agent = service(
            actor=self.principal,
            organization_id=self.organization_id,
            agent_id=self.lookup_uuid(),
            reason=payload.validated_data["reason"],
        )
        return Response(AgentSerializer(agent).data)

    @action(detail=True, methods=["post"])
    def suspend(self, request: Request, pk: str) -> Response:
        return self._transition(request, services.agent_suspend)

    @action(detail=True, methods=["post"])
    def reactivate(self, request: Request, pk: str) -> Response:
        return self._transition(request, services.agent_reactivate)

    @action(detail=True, methods=["post"])
    def decommission(self, request: Request, pk: str) -> Response:
        return self._transition(request, services.agent_decommission)

    @action(detail=True, methods=["get"])
    def delegation(self, request: Request, pk: str) -> Response:
        agent = services.agent_get(
            organization_id=self.organization_id, agent_id=self.lookup_uuid()
        )
        return Response(services.delegation_policy(agent))

    @extend_schema(
        request=DelegationSerializer,
        responses={200: DelegationSerializer, **problem_responses(400, 401, 403, 404, 409)},
        description="Set who may act for the agent through token exchange (agents:write).",
    )
    @delegation.mapping.put
    def delegation_set(self, request: Request, pk: str) -> Response:
        payload = DelegationSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        agent = services.agent_delegation_set(
            actor=self.principal, organization_id=self.organization_id,
            agent_id=self.lookup_uuid(), **payload.validated_data,
        )  # fmt: skip
        return Response(services.delegation_policy(agent))

    @extend_schema(
        request=SponsorSerializer,
        responses={200: AgentSerializer, **problem_responses(400, 401, 403, 404, 409)},
        description="Reassign who answers for the agent: an active person of its organization"
        " (agents:write). Do it before a sponsor leaves: a sponsor's departure suspends the"
        " agents they still sponsor.",
    )
    @action(detail=True, methods=["put"], url_path="sponsor")
    def sponsor_set(self, request: Request, pk: str) -> Response:
        payload = SponsorSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        agent = services.agent_sponsor_set(
            actor=self.principal, organization_id=self.organization_id,
            agent_id=self.lookup_uuid(), username=payload.validated_data["username"],
        )  # fmt: skip
        return Response(AgentSerializer(agent).data)

    @extend_schema(
        request=AttestSerializer,
        responses={200: AttestedSerializer, **problem_responses(400, 401, 403, 404)},
        description="Attest that these agents are still needed: each attestation runs one more"
        " of the organization's attestation periods (agents:write). All or none.",
    )
    @action(detail=False, methods=["post"])
    def attest(self, request: Request) -> Response:
        payload = AttestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        count = services.agents_attest(
            actor=self.principal, organization_id=self.organization_id,
            agent_ids=payload.validated_data["agents"],
        )  # fmt: skip
        return Response({"attested": count})

    @extend_schema(
        request=KillSwitchSerializer,
        responses={200: KillSwitchedSerializer, **problem_responses(400, 401, 403, 404)},
        description="Suspend every active agent of the organization, or of one sponsor, at once;"
        " their tokens and every token exchanged from them are revoked (agents:write).",
    )
    @action(detail=False, methods=["post"], url_path="kill-switch")
    def kill_switch(self, request: Request) -> Response:
        payload = KillSwitchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        count = services.kill_switch(
            actor=self.principal, organization_id=self.organization_id,
            sponsor=payload.validated_data.get("sponsor"),
            reason=payload.validated_data["reason"],
        )  # fmt: skip
        return Response({"suspended": count})


class MemberSerializer(serializers.ModelSerializer[OrganizationMember]):
    class Meta:
        model = OrganizationMember
        fields = ["id", "organization_id", "agent_id", "role", "created_at", "updated_at"]
        read_only_fields = fields


class MemberWriteSerializer(StrictSerializer):
    agent_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=MemberRole.choices)


@extend_schema_view(
    list=extend_schema(
        responses={200: MemberSerializer(many=True), **problem_responses(400, 401, 403, 404)}
    ),
    create=extend_schema(
        request=MemberWriteSerializer,
        responses={201: MemberSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
)
class OrganizationMemberViewSet(TenantViewSet):
    """Agents' roles within an organization: its own admins, or platform staff for any."""

    resource_type = "member"
    required_scopes = {"list": Scope.AGENTS_READ, "create": Scope.MEMBERS_WRITE}
    serializer_class = MemberSerializer
    pagination_class = PageNumberPagination
    queryset = OrganizationMember.objects.none()

    def acting_in(self, organization_id: UUID) -> AbstractContextManager[None]:
        """Own organization: the request's context. Another: platform staff only, else 404."""
        if organization_id == self.principal.organization_id:
            return nullcontext()
        if self.principal.is_platform:
            return platform_context(reason="api:members", actor=self.principal)
        raise NotFound("No such organization.")

    def list(self, request: Request, organization_pk: str) -> Response:
        organization_id = self.lookup_uuid("organization_pk")
        with self.acting_in(organization_id):
            members = OrganizationMember.objects.filter(organization_id=organization_id).order_by(
                "created_at", "id"
            )
            page = self.paginate_queryset(members)
            data = MemberSerializer(page, many=True).data
        return self.get_paginated_response(data)

    def create(self, request: Request, organization_pk: str) -> Response:
        organization_id = self.lookup_uuid("organization_pk")
        payload = MemberWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        with self.acting_in(organization_id):
            member = services.member_add(
                actor=self.principal, organization_id=organization_id, **payload.validated_data
            )
            data = MemberSerializer(member).data
        return Response(data, status=status.HTTP_201_CREATED)
