"""API for reading the caller's organization's audit log."""

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from agentidp.api import CursorPagination, QuerySerializer, TenantViewSet
from agentidp.schema import problem_responses
from compliance.checkpoints import (
    b64,
    checkpoint_document,
    consistency_proof,
    inclusion_proof,
)
from compliance.controls import controls_evaluate
from compliance.integrity import Problem, audit_integrity_verify_recorded
from compliance.models import AuditCheckpoint, AuditEvent
from compliance.reports import REPORT_MAX_DAYS, report_build, report_pdf
from compliance.selectors import audit_event_list
from compliance.services import (
    INTEGRITY_ALTERED,
    INTEGRITY_OK,
    INTEGRITY_UNLINKED,
    ChainBreak,
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


MAX_TREE_SIZE = 2**62


FINDING_CODES = [*ChainBreak.values, *Problem.values]


class FindingSerializer(serializers.Serializer):  # type: ignore[type-arg]
    code = serializers.ChoiceField(
        choices=FINDING_CODES,
        help_text="sequence_gap, unlinked, altered, missing_before_head: the hash chain; "
        "truncated, rewritten, sequence_reused, tree_altered: the log against its signed "
        "checkpoints; checkpoint_*: the checkpoints themselves and their copies outside the "
        "database.",
    )
    reason = serializers.CharField()
    sequence = serializers.IntegerField(allow_null=True)
    event_id = serializers.UUIDField(allow_null=True)
    checkpoint = serializers.IntegerField(
        allow_null=True, help_text="The number of the checkpoint involved, if any."
    )


class ChainVerificationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    organization_id = serializers.UUIDField()
    verified = serializers.BooleanField()
    checked = serializers.IntegerField(help_text="Events whose hash and link were recomputed.")
    brokenAtEventId = serializers.UUIDField(  # noqa: N815 - the documented JSON name
        allow_null=True, help_text="The first event that does not verify; null when none."
    )
    valid = serializers.BooleanField()
    events_checked = serializers.IntegerField()
    head_sequence = serializers.IntegerField()
    complete = serializers.BooleanField(
        help_text="The whole log against every signed checkpoint and every copy outside the "
        "database (false for a range: from/to)."
    )
    checks = serializers.DictField(
        help_text="What was compared: checkpoints, roots, signatures, the copy's store."
    )
    first_invalid = FindingSerializer(required=False)
    findings = FindingSerializer(many=True, required=False, help_text="At most 20.")

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField()
        fields["to"] = serializers.IntegerField(allow_null=True)
        return fields


class VerifyQuerySerializer(QuerySerializer):
    """``from`` and ``to``: the range of sequence numbers (inclusive; default the whole chain)."""

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField(
            min_value=1, max_value=MAX_TREE_SIZE, required=False
        )
        fields["to"] = serializers.IntegerField(
            min_value=1, max_value=MAX_TREE_SIZE, required=False
        )
        return fields

    def validate(self, attrs: dict[str, int]) -> dict[str, int]:
        if "from" in attrs and "to" in attrs and attrs["from"] > attrs["to"]:
            raise serializers.ValidationError({"to": ["Must not be below from."]})
        return attrs


class VerifyThrottle(SimpleRateThrottle):
    """Verification reads the whole chain: a few runs a minute per organization (shared by
    every process through the Redis cache), ``AUDIT_VERIFY_RATE``."""

    scope = "audit-verify"

    def get_rate(self) -> str:
        return str(settings.AGENTIDP["AUDIT_VERIFY_RATE"])

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        organization_id = getattr(view, "organization_id", None)
        return f"throttle_audit_verify_{organization_id}" if organization_id else None


class AuditQuerySerializer(QuerySerializer):
    action = serializers.CharField(max_length=100, required=False)
    actor_type = serializers.ChoiceField(
        choices=["user", "agent", "federated", "system"], required=False
    )
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


class ProofQuerySerializer(QuerySerializer):
    tree_size = serializers.IntegerField(
        min_value=1, max_value=MAX_TREE_SIZE, required=False,
        help_text="A checkpoint's tree size (default: the latest checkpoint).",
    )  # fmt: skip


class ConsistencyQuerySerializer(QuerySerializer):
    first = serializers.IntegerField(
        min_value=0, max_value=MAX_TREE_SIZE,
        help_text="A checkpoint's tree size, at most `second` (400 otherwise).",
    )  # fmt: skip
    second = serializers.IntegerField(
        min_value=0, max_value=MAX_TREE_SIZE, help_text="A checkpoint's tree size."
    )


class CheckpointSerializer(serializers.Serializer):  # type: ignore[type-arg]
    number = serializers.IntegerField(help_text="Its place in the chain of checkpoints: 1, 2, ...")
    tree_size = serializers.IntegerField()
    root_hash = serializers.CharField(help_text="Hex SHA-256 of the tree's root.")
    previous_tree_size = serializers.IntegerField(help_text="The previous checkpoint's size.")
    previous_root_hash = serializers.CharField(help_text="The previous checkpoint's root.")
    published_at = serializers.DateTimeField()
    signature = serializers.CharField(help_text="Compact JWS (typ agentidp-checkpoint+jwt).")
    kid = serializers.CharField()
    public_jwk = serializers.DictField()


class CheckpointListSerializer(serializers.Serializer):  # type: ignore[type-arg]
    results = CheckpointSerializer(many=True)


class InclusionProofSerializer(serializers.Serializer):  # type: ignore[type-arg]
    event_id = serializers.UUIDField()
    sequence = serializers.IntegerField()
    leaf_index = serializers.IntegerField(help_text="sequence - 1")
    leaf_data = serializers.CharField(help_text="The event's chain hash (hex): the leaf's data.")
    leaf_hash = serializers.CharField(help_text="Base64 SHA-256(0x00 || leaf data)")
    tree_size = serializers.IntegerField()
    inclusion_path = serializers.ListField(child=serializers.CharField(), help_text="Base64")
    checkpoint = CheckpointSerializer()


class ConsistencyProofSerializer(serializers.Serializer):  # type: ignore[type-arg]
    first = CheckpointSerializer()
    second = CheckpointSerializer()
    consistency_path = serializers.ListField(child=serializers.CharField(), help_text="Base64")


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "action",
                {"type": "string", "maxLength": 100},
                description="Exact action, or a family like agent.*",
            ),
            OpenApiParameter("actor_type", str, enum=["user", "agent", "federated", "system"]),
            OpenApiParameter("actor_id", {"type": "string", "maxLength": 200}),
            OpenApiParameter("subject_type", {"type": "string", "maxLength": 50}),
            OpenApiParameter("subject_id", {"type": "string", "maxLength": 200}),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601; inclusive"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601; exclusive"),
        ],
        responses={200: AuditEventSerializer(many=True), **problem_responses(400, 401, 403)},
    ),
    verify=extend_schema(
        parameters=[
            OpenApiParameter(
                "from",
                {"type": "integer", "minimum": 1, "maximum": MAX_TREE_SIZE},
                description="First sequence number (default 1; at most `to`)",
            ),
            OpenApiParameter(
                "to",
                {"type": "integer", "minimum": 1, "maximum": MAX_TREE_SIZE},
                description="Last sequence number (default the head; at least `from`)",
            ),
        ],
        responses={200: ChainVerificationSerializer, **problem_responses(400, 401, 403, 429)},
        description="Verify the caller's organization's audit log: recompute its hash chain "
        "(or a range of it), recompute the Merkle root at the size of every signed checkpoint "
        "and compare it with the signed root, and check the checkpoints, their chain and their "
        "copies outside the database. A failure names the first event (or checkpoint) and a "
        "code, is recorded as a failed verification and published as audit.integrity_failed. "
        "Rate-limited per organization.",
    ),
    proof=extend_schema(
        parameters=[ProofQuerySerializer],
        responses={200: InclusionProofSerializer, **problem_responses(400, 401, 403, 404, 409)},
        description="An RFC 9162 inclusion proof of the event in a signed checkpoint's tree "
        "(the latest, or the one of `tree_size`).",
    ),
    checkpoints=extend_schema(
        responses={200: CheckpointListSerializer, **problem_responses(401, 403)},
        description="The organization's signed checkpoints, newest first (at most 100).",
    ),
    consistency=extend_schema(
        parameters=[ConsistencyQuerySerializer],
        responses={200: ConsistencyProofSerializer, **problem_responses(400, 401, 403, 404)},
        description="An RFC 9162 consistency proof: the tree of checkpoint `first` is a "
        "prefix of the tree of checkpoint `second` (tree sizes).",
    ),
)
class AuditEventViewSet(TenantViewSet):
    """The hash-chained audit events of the caller's organization."""

    resource_type = "audit_event"
    required_scopes = dict.fromkeys(
        ["list", "verify", "proof", "checkpoints", "consistency"], Scope.AUDIT_READ
    )
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

    @action(detail=False, methods=["get"], throttle_classes=[VerifyThrottle])
    def verify(self, request: Request) -> Response:
        query = VerifyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        result = audit_integrity_verify_recorded(
            organization_id=self.organization_id,
            actor=self.principal,
            source="api",
            first=query.validated_data.get("from", 1),
            last=query.validated_data.get("to"),
        )
        return Response(result.as_document())

    @action(detail=True, methods=["get"])
    def proof(self, request: Request, pk: str) -> Response:
        query = ProofQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        proof = inclusion_proof(
            organization_id=self.organization_id, event_id=self.lookup_uuid(),
            tree_size=query.validated_data.get("tree_size"),
        )  # fmt: skip
        return Response(
            {
                "event_id": str(proof.event.id),
                "sequence": proof.event.sequence,
                "leaf_index": proof.leaf_index,
                "leaf_data": proof.event.hash,
                "leaf_hash": b64(proof.leaf_hash),
                "tree_size": proof.checkpoint.tree_size,
                "inclusion_path": [b64(h) for h in proof.path],
                "checkpoint": checkpoint_document(proof.checkpoint),
            }
        )

    @action(detail=False, methods=["get"])
    def checkpoints(self, request: Request) -> Response:
        latest = AuditCheckpoint.objects.filter(organization_id=self.organization_id).order_by(
            "-number"
        )[:100]
        return Response({"results": [checkpoint_document(c) for c in latest]})

    @action(detail=False, methods=["get"], url_path="checkpoints/consistency")
    def consistency(self, request: Request) -> Response:
        query = ConsistencyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        proof = consistency_proof(organization_id=self.organization_id, **query.validated_data)
        return Response(
            {
                "first": checkpoint_document(proof.first),
                "second": checkpoint_document(proof.second),
                "consistency_path": [b64(h) for h in proof.path],
            }
        )


# --- controls and the auditors' report ---------------------------------------------------------


class ControlDefinitionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    checks = serializers.CharField()
    kept_true_by = serializers.CharField()
    fails_when = serializers.CharField()


class ControlSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.CharField()
    name = serializers.CharField()
    criteria = serializers.ListField(child=serializers.CharField(), help_text="SOC 2 TSC")
    passing = serializers.BooleanField()
    detail = serializers.CharField(help_text="Why it fails, naming the cause; empty when passing.")
    summary = serializers.CharField(help_text="What the evidence says, in a sentence.")
    definition = ControlDefinitionSerializer(
        help_text="What it checks, which job or setting keeps it true, what makes it fail"
        " (docs/compliance/controls.md)."
    )
    checked = serializers.ListField(child=serializers.CharField())
    checked_at = serializers.DateTimeField()
    evidence = serializers.DictField()


class ControlsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    organization_id = serializers.UUIDField()
    all_passing = serializers.BooleanField()
    controls = ControlSerializer(many=True)


class ReportQuerySerializer(QuerySerializer):
    since = serializers.DateTimeField(
        required=False,
        help_text="Default: 30 days before until. Before until, and at most "
        f"{REPORT_MAX_DAYS} days before it (400 otherwise).",
    )
    until = serializers.DateTimeField(required=False, help_text="Default: now")

    def validate(self, attrs: dict[str, datetime]) -> dict[str, datetime]:
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - timedelta(days=30)
        if since >= until:
            raise serializers.ValidationError({"since": ["Must be before until."]})
        if until - since > timedelta(days=REPORT_MAX_DAYS):
            raise serializers.ValidationError({"since": [f"At most {REPORT_MAX_DAYS} days."]})
        return {"since": since, "until": until}


class PDFRenderer(BaseRenderer):
    """``Accept: application/pdf`` or ``?format=pdf``: the report as a PDF (ReportLab). Error
    bodies keep their JSON (problem+json) whatever was asked."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(
        self,
        data: object,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, object] | None = None,
    ) -> bytes:
        if isinstance(data, dict) and "controls" in data and "period" in data:
            return report_pdf(data)
        return json.dumps(data).encode()


@extend_schema_view(
    controls=extend_schema(
        responses={200: ControlsSerializer, **problem_responses(401, 403)},
        description="The status of each technical control for the caller's organization, with "
        "the evidence it was decided on, computed now from the real state.",
    ),
    report=extend_schema(
        parameters=[ReportQuerySerializer],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "application/pdf"): OpenApiTypes.BINARY,
            # 404: a ``format`` that is neither json nor pdf (DRF's format override)
            **problem_responses(400, 401, 403, 404),
        },
        description="The compliance report for a period (default the last 30 days): controls "
        "and evidence, chain verification, the latest signed checkpoint, rotation history, "
        "members and roles, dead letters, failed authentications. JSON, or a PDF with "
        "`Accept: application/pdf` (or `?format=pdf`).",
    ),
)
class ComplianceViewSet(TenantViewSet):
    """``GET /compliance/controls`` and ``GET /compliance/report``: for auditors (``audit:read``)."""

    resource_type = "compliance"
    required_scopes = {"controls": Scope.AUDIT_READ, "report": Scope.AUDIT_READ}
    queryset = AuditEvent.objects.none()
    serializer_class = ControlsSerializer

    @action(detail=False, methods=["get"])
    def controls(self, request: Request) -> Response:
        controls = controls_evaluate(organization_id=self.organization_id, request=request)
        return Response({
            "organization_id": str(self.organization_id),
            "all_passing": all(c.passing for c in controls),
            "controls": [c.as_document() for c in controls],
        })  # fmt: skip

    @action(detail=False, methods=["get"], renderer_classes=[JSONRenderer, PDFRenderer])
    def report(self, request: Request) -> Response:
        query = ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = report_build(
            organization_id=self.organization_id, actor=self.principal, request=request,
            **query.validated_data,
        )  # fmt: skip
        slug = (
            str(report["organization"]["slug"])
            if isinstance(report["organization"], dict)
            else "report"
        )
        headers = {"Cache-Control": "no-store"}
        if request.accepted_renderer.format == "pdf":
            headers["Content-Disposition"] = (
                f'attachment; filename="agentidp-compliance-{slug}.pdf"'
            )
        return Response(report, headers=headers)
