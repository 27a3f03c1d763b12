"""API for reading the caller's organization's audit log."""

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import CursorPagination, QuerySerializer, TenantViewSet
from agentidp.schema import problem_responses
from compliance.models import AuditEvent
from compliance.selectors import audit_event_list
from compliance.services import (
    INTEGRITY_ALTERED,
    INTEGRITY_OK,
    INTEGRITY_UNLINKED,
    audit_chain_verify_recorded,
    audit_events_integrity,
)
from organizations.choices import Scope


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "organization_id",
            "sequence",
            "occurred_at",
            "actor_type",
            "actor_id",
            "action",
            "outcome",
            "subject_type",
            "subject_id",
            "data",
            "previous_hash",
            "hash",
            "integrity",
        ]
        read_only_fields = fields

    integrity = serializers.SerializerMethodField(
        help_text="ok; altered (its contents no longer match its hash); unlinked (its "
        "previous_hash is not its predecessor's hash). Anything but ok means tampering."
    )

    @extend_schema_field(
        serializers.ChoiceField(choices=[INTEGRITY_OK, INTEGRITY_ALTERED, INTEGRITY_UNLINKED])
    )
    def get_integrity(self, event: AuditEvent) -> str:
        checked: dict[uuid.UUID, str] = self.context.get("integrity", {})
        return checked.get(event.id, INTEGRITY_UNLINKED)


class FirstInvalidSerializer(serializers.Serializer):  # type: ignore[type-arg]
    sequence = serializers.IntegerField(allow_null=True)
    event_id = serializers.UUIDField(allow_null=True)
    reason = serializers.CharField()


class ChainVerificationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    organization_id = serializers.UUIDField()
    valid = serializers.BooleanField()
    events_checked = serializers.IntegerField()
    head_sequence = serializers.IntegerField()
    first_invalid = FirstInvalidSerializer(required=False)


class AuditQuerySerializer(QuerySerializer):
    action = serializers.CharField(max_length=100, required=False)
    actor_type = serializers.ChoiceField(choices=["user", "agent", "system"], required=False)
    actor_id = serializers.CharField(max_length=200, required=False)
    subject_type = serializers.CharField(max_length=50, required=False)
    subject_id = serializers.CharField(max_length=200, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class AuditCursorPagination(CursorPagination):
    """Stable cursors over the chain, newest first."""

    ordering = "-sequence"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("action", str, description="Exact action, or a family like agent.*"),
            OpenApiParameter("actor_type", str, enum=["user", "agent", "system"]),
            OpenApiParameter("actor_id", str),
            OpenApiParameter("subject_type", str),
            OpenApiParameter("subject_id", str),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601; inclusive"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601; exclusive"),
        ],
        responses={200: AuditEventSerializer(many=True), **problem_responses(400, 401, 403)},
    ),
    verify=extend_schema(
        responses={200: ChainVerificationSerializer, **problem_responses(401, 403)},
        description="Recompute the caller's organization's whole audit chain.",
    ),
)
class AuditEventViewSet(TenantViewSet):
    """The hash-chained audit events of the caller's organization."""

    resource_type = "audit_event"
    required_scopes = {"list": Scope.AUDIT_READ, "verify": Scope.AUDIT_READ}
    serializer_class = AuditEventSerializer
    pagination_class = AuditCursorPagination
    queryset = AuditEvent.objects.none()

    def list(self, request: Request) -> Response:
        query = AuditQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        organization_id = self.organization_id
        events = audit_event_list(organization_id=organization_id, **query.validated_data)
        page = self.paginate_queryset(events) or []
        integrity = audit_events_integrity(organization_id=organization_id, events=page)
        data = AuditEventSerializer(page, many=True, context={"integrity": integrity}).data
        return self.get_paginated_response(data)

    @action(detail=False, methods=["get"])
    def verify(self, request: Request) -> Response:
        organization_id = self.organization_id
        result = audit_chain_verify_recorded(organization_id=organization_id)
        return Response(result.as_document(organization_id))
