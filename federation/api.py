"""API for federation: the trust registry (scope ``federation:manage``) and verification of
partners' tokens (scope ``federation:verify``)."""

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import PageNumberPagination, StrictSerializer, TenantViewSet
from agentidp.schema import problem_responses
from federation import selectors, services
from federation.choices import PartnerStatus, Rejection
from federation.models import FederationPartner, PartnerResource
from organizations.choices import Scope

ALLOW_DELEGATION_HELP = (
    "Only for this deployment's own issuer (its other organizations, allowed_organizations): "
    "their agents may act for this organization's agents through token exchange where an "
    "agent's delegation policy names them."
)


@extend_schema_field(
    {
        "type": "array",
        "maxItems": 50,
        "items": {"type": "string", "enum": sorted(services.FEDERABLE_SCOPES)},
        "description": "The most a federated principal may be granted here: agent scopes "
        "only (never openid).",
    }
)
class FederableScopesField(serializers.ListField):
    """What ``federation.services.scopes_checked`` accepts, described for the schema."""


class PartnerSerializer(serializers.ModelSerializer[FederationPartner]):
    """A partner as the API shows it: its limits, effective status and its keys' kids."""

    status = serializers.SerializerMethodField(help_text="active, suspended or expired.")
    keys = serializers.SerializerMethodField(help_text="The partner's signing keys as fetched.")

    class Meta:
        model = FederationPartner
        fields = ["id", "issuer", "jwks_uri", "did", "allowed_organizations", "allowed_scopes",
                  "read_only", "allow_delegation", "status", "expires_at", "jwks_uri_other_host",
                  "notes",
                  "created_by", "created_at", "updated_at", "keys", "keys_fetched_at",
                  "last_fetch_at", "last_fetch_result", "last_fetch_error"]  # fmt: skip
        read_only_fields = fields

    def get_status(self, partner: FederationPartner) -> str:
        return partner.effective_status()

    def get_keys(self, partner: FederationPartner) -> list[dict[str, str]]:
        keys = partner.jwks.get("keys")
        listed = keys if isinstance(keys, list) else []
        return [
            {name: str(key[name]) for name in ("kid", "kty", "alg", "crv") if name in key}
            for key in listed
            if isinstance(key, dict)
        ]


class TrustSerializer(StrictSerializer):
    issuer = serializers.CharField(
        max_length=2048, trim_whitespace=False,
        help_text="The partner's issuer identifier, exactly as its tokens' iss.",
    )  # fmt: skip
    jwks_uri = serializers.CharField(
        max_length=2048, required=False, default="", allow_blank=True,
        help_text="Discovered from the issuer's metadata when not given.",
    )  # fmt: skip
    did = serializers.CharField(
        max_length=2048, required=False, default="", allow_blank=True,
        help_text="The partner's did:web; its document must list the issuer's keys.",
    )  # fmt: skip
    allowed_organizations = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=200), required=False, default=list,
        max_length=services.MAX_ALLOWED_ORGANIZATIONS,
        help_text="The partner's organization_id values accepted (empty: all).",
    )  # fmt: skip
    allowed_scopes = FederableScopesField(
        child=serializers.CharField(max_length=100), max_length=50
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    notes = serializers.CharField(
        max_length=services.MAX_NOTES, required=False, default="", allow_blank=True
    )
    # DRF takes declared fields out of the class; the name only shadows Field.read_only for mypy
    read_only = serializers.BooleanField(  # type: ignore[assignment]
        required=False, default=True, help_text="Federated principals may only read the API."
    )
    jwks_uri_other_host = serializers.BooleanField(
        required=False, default=False,
        help_text="Allow a jwks_uri on another host than the issuer.",
    )  # fmt: skip
    allow_delegation = serializers.BooleanField(
        required=False, default=False, help_text=ALLOW_DELEGATION_HELP
    )


class PartnerUpdateSerializer(StrictSerializer):
    status = serializers.ChoiceField(
        choices=[PartnerStatus.ACTIVE, PartnerStatus.SUSPENDED], required=False
    )
    allowed_organizations = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=200), required=False,
        max_length=services.MAX_ALLOWED_ORGANIZATIONS,
    )  # fmt: skip
    allowed_scopes = FederableScopesField(
        child=serializers.CharField(max_length=100), max_length=50, required=False
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    notes = serializers.CharField(max_length=services.MAX_NOTES, required=False, allow_blank=True)
    read_only = serializers.BooleanField(required=False)  # type: ignore[assignment]
    allow_delegation = serializers.BooleanField(required=False, help_text=ALLOW_DELEGATION_HELP)


class VerifySerializer(StrictSerializer):
    token = serializers.CharField(
        trim_whitespace=False, help_text="The partner's token (a compact JWS)."
    )


class VerificationSerializer(serializers.Serializer):  # type: ignore[type-arg]
    valid = serializers.BooleanField()
    reason = serializers.ChoiceField(
        choices=Rejection.choices, required=False, help_text="Why it is not valid (stable codes)."
    )
    detail = serializers.CharField(required=False)
    partner_id = serializers.UUIDField(required=False, allow_null=True)
    issuer = serializers.CharField(required=False)
    header = serializers.DictField(required=False)
    claims = serializers.DictField(required=False, help_text="The verified claims.")


@extend_schema_view(
    trust=extend_schema(
        request=TrustSerializer,
        responses={201: PartnerSerializer, **problem_responses(400, 401, 403, 409)},
        description="Register a partner issuer, after fetching and checking its metadata, "
        "JWKS and (given) DID document; nothing is stored when any check fails.",
    ),
    verify=extend_schema(
        request=VerifySerializer,
        responses={200: VerificationSerializer, **problem_responses(400, 401, 403)},
        description="Verify that an active partner of the caller's organization issued the "
        'token for this deployment: its claims, or {"valid": false, "reason": ...}.',
    ),
)
class FederationViewSet(TenantViewSet):
    """``POST /federation/trust`` and ``POST /federation/verify``."""

    resource_type = "federation_partner"
    required_scopes = {"trust": Scope.FEDERATION_MANAGE, "verify": Scope.FEDERATION_VERIFY}
    queryset = FederationPartner.objects.none()
    serializer_class = PartnerSerializer

    @action(detail=False, methods=["post"])
    def trust(self, request: Request) -> Response:
        payload = TrustSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        partner = services.partner_register(
            actor=self.principal, organization_id=self.organization_id, **payload.validated_data
        )
        return Response(PartnerSerializer(partner).data, status=status.HTTP_201_CREATED)

    @action(detail=False, methods=["post"])
    def verify(self, request: Request) -> Response:
        payload = VerifySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        check = services.partner_token_verify(
            actor=self.principal,
            organization_id=self.organization_id,
            token=payload.validated_data["token"],
        )
        partner_id = str(check.partner.id) if check.partner else None
        if check.verified is None:
            assert check.reason is not None  # noqa: S101 - a check has one or the other
            return Response(
                {"valid": False, "reason": check.reason.value, "detail": check.detail,
                 "partner_id": partner_id},
            )  # fmt: skip
        return Response(
            {"valid": True, "partner_id": partner_id, "issuer": check.verified.partner.issuer,
             "header": check.verified.header, "claims": check.verified.claims},
        )  # fmt: skip


@extend_schema_view(
    list=extend_schema(responses={200: PartnerSerializer(many=True), **problem_responses(400, 401, 403)}),
    retrieve=extend_schema(responses={200: PartnerSerializer, **problem_responses(400, 401, 403, 404)}),
    partial_update=extend_schema(
        request=PartnerUpdateSerializer,
        responses={200: PartnerSerializer, **problem_responses(400, 401, 403, 404)},
        description="Suspend or reactivate a partner, or change its limits or expiry.",
    ),
    destroy=extend_schema(responses={204: None, **problem_responses(400, 401, 403, 404)}),
    refresh_keys=extend_schema(
        request=None,
        responses={200: PartnerSerializer, **problem_responses(400, 401, 403, 404)},
        description="Fetch the partner's JWKS now.",
    ),
)  # fmt: skip
class FederationPartnerViewSet(TenantViewSet):
    """The caller's organization's partners."""

    resource_type = "federation_partner"
    required_scopes = {
        **dict.fromkeys(["list", "retrieve"], Scope.FEDERATION_READ),
        **dict.fromkeys(["partial_update", "destroy", "refresh_keys"], Scope.FEDERATION_MANAGE),
    }
    serializer_class = PartnerSerializer
    pagination_class = PageNumberPagination
    queryset = FederationPartner.objects.none()

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.partner_list(organization_id=self.organization_id))
        return self.get_paginated_response(PartnerSerializer(page or [], many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        partner = services.partner_get(
            organization_id=self.organization_id, partner_id=self.lookup_uuid()
        )
        return Response(PartnerSerializer(partner).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        payload = PartnerUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = {k: v for k, v in payload.validated_data.items() if k in request.data}
        partner = services.partner_update(
            actor=self.principal, organization_id=self.organization_id,
            partner_id=self.lookup_uuid(), changes=changes,
        )  # fmt: skip
        return Response(PartnerSerializer(partner).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.partner_delete(
            actor=self.principal, organization_id=self.organization_id,
            partner_id=self.lookup_uuid(),
        )  # fmt: skip
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"], url_path="refresh-keys")
    def refresh_keys(self, request: Request, pk: str) -> Response:
        partner = services.partner_keys_refresh(
            organization_id=self.organization_id, partner_id=self.lookup_uuid()
        )
        return Response(PartnerSerializer(partner).data)


class PartnerResourceSerializer(serializers.ModelSerializer[PartnerResource]):
    identifier = serializers.CharField(source="resource.identifier", read_only=True)

    class Meta:
        model = PartnerResource
        fields = ["id", "partner", "resource", "identifier", "scopes", "created_by",
                  "created_at", "updated_at"]  # fmt: skip
        read_only_fields = fields


class PartnerResourceInputSerializer(StrictSerializer):
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=100), max_length=50,
        help_text="The resource's scopes the partner's agents may be issued; an empty list "
        "ends the share.",
    )  # fmt: skip


SHARE_ERRORS = problem_responses(400, 401, 403, 404)


@extend_schema_view(
    list=extend_schema(
        responses={200: PartnerResourceSerializer(many=True), **SHARE_ERRORS},
        description="The organization's registered resources shared with this partner.",
    ),
    update=extend_schema(
        request=PartnerResourceInputSerializer,
        responses={200: PartnerResourceSerializer, 204: None, **SHARE_ERRORS},
        description="Share one of the organization's registered resources with the partner "
        "(the path's last segment is the resource's id): the partner's agents may then "
        "exchange their tokens (JWT bearer, token exchange) for one naming it with "
        "resource=, within these of its scopes and the scopes their own token holds. An "
        "empty list ends the share (204). A resource that requires DPoP cannot be shared.",
    ),
    destroy=extend_schema(responses={204: None, **SHARE_ERRORS}),
)  # fmt: skip
class PartnerResourceViewSet(TenantViewSet):
    """``/federation/partners/{id}/resources/{resource_id}``: resources shared with a partner."""

    resource_type = "federation_partner_resource"
    required_scopes = {
        "list": Scope.FEDERATION_READ,
        **dict.fromkeys(["update", "destroy"], Scope.FEDERATION_MANAGE),
    }
    serializer_class = PartnerResourceSerializer
    queryset = PartnerResource.objects.none()
    pagination_class = None

    def list(self, request: Request, partner_pk: str) -> Response:
        shares = services.partner_resources(
            organization_id=self.organization_id, partner_id=self.lookup_uuid("partner_pk")
        )
        return Response(PartnerResourceSerializer(shares, many=True).data)

    def _set(self, scopes: object) -> PartnerResource | None:
        return services.partner_resource_set(
            actor=self.principal, organization_id=self.organization_id,
            partner_id=self.lookup_uuid("partner_pk"), resource_id=self.lookup_uuid(),
            scopes=scopes,
        )  # fmt: skip

    def update(self, request: Request, partner_pk: str, pk: str) -> Response:
        payload = PartnerResourceInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        share = self._set(payload.validated_data["scopes"])
        if share is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(PartnerResourceSerializer(share).data)

    def destroy(self, request: Request, partner_pk: str, pk: str) -> Response:
        self._set([])
        return Response(status=status.HTTP_204_NO_CONTENT)
