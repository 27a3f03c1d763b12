"""API for an agent's client secrets; a secret appears once, in the response that creates it."""

import uuid

from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import StrictSerializer, TenantViewSet
from agentidp.schema import problem_responses
from credentials import keys as agent_key_services
from credentials import services
from credentials.choices import SigningAlgorithm
from credentials.models import AgentKey, ClientSecret
from organizations.choices import AGENT_SCOPES, Scope


class CredentialSerializer(serializers.ModelSerializer[ClientSecret]):
    """Metadata only: the digest never leaves the server, the secret is never stored."""

    status = serializers.SerializerMethodField()

    class Meta:
        model = ClientSecret
        fields = ["id", "prefix", "status", "created_at", "expires_at", "rotated_at",
                  "revoked_at", "last_used_at"]  # fmt: skip
        read_only_fields = fields

    def get_status(self, obj: ClientSecret) -> str:
        return obj.status_at(timezone.now())


class IssuedCredentialSerializer(serializers.Serializer):  # type: ignore[type-arg]
    client_id = serializers.CharField()
    client_secret = serializers.CharField(help_text="Shown once; store it now.")
    credential = CredentialSerializer()


class GenerateSerializer(StrictSerializer):
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class RotateSerializer(StrictSerializer):
    grace_seconds = serializers.IntegerField(
        min_value=0, max_value=services.MAX_GRACE_SECONDS, required=False, allow_null=True,
        default=None,
    )  # fmt: skip
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


def _issued(issued: services.IssuedSecret) -> dict[str, object]:
    return {
        "client_id": issued.client_id,
        "client_secret": issued.secret,
        "credential": CredentialSerializer(issued.credential).data,
    }


@extend_schema_view(
    list=extend_schema(responses={200: CredentialSerializer(many=True), **problem_responses(400, 401, 403, 404)}),
    create=extend_schema(
        request=GenerateSerializer,
        responses={201: IssuedCredentialSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
    rotate=extend_schema(
        request=RotateSerializer,
        responses={201: IssuedCredentialSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
    destroy=extend_schema(responses={204: None, **problem_responses(400, 401, 403, 404, 409)}),
)  # fmt: skip
class AgentCredentialViewSet(TenantViewSet):
    """Client secrets of one of the caller's organization's agents."""

    resource_type = "credential"
    required_scopes = {
        "list": Scope.AGENTS_READ,
        "create": Scope.CREDENTIALS_WRITE,
        "rotate": Scope.CREDENTIALS_WRITE,
        "destroy": Scope.CREDENTIALS_WRITE,
    }
    serializer_class = CredentialSerializer
    queryset = ClientSecret.objects.none()
    pagination_class = None

    def _scope(self) -> tuple[uuid.UUID, uuid.UUID]:
        return self.organization_id, self.lookup_uuid("agent_pk")

    def list(self, request: Request, agent_pk: str) -> Response:
        organization_id, agent_id = self._scope()
        credentials = services.credential_list(
            organization_id=organization_id,
            agent_id=agent_id,
        )
        return Response(CredentialSerializer(credentials, many=True).data)

    def create(self, request: Request, agent_pk: str) -> Response:
        payload = GenerateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        organization_id, agent_id = self._scope()
        issued = services.credential_generate(
            actor=self.principal,
            organization_id=organization_id,
            agent_id=agent_id,
            expires_at=payload.validated_data["expires_at"],
        )
        return Response(
            _issued(issued), status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"}
        )

    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, agent_pk: str, pk: str) -> Response:
        payload = RotateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        organization_id, agent_id = self._scope()
        issued = services.credential_rotate(
            actor=self.principal,
            organization_id=organization_id,
            agent_id=agent_id,
            credential_id=self.lookup_uuid(),
            grace_seconds=payload.validated_data["grace_seconds"],
            expires_at=payload.validated_data["expires_at"],
        )
        return Response(
            _issued(issued), status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"}
        )

    def destroy(self, request: Request, agent_pk: str, pk: str) -> Response:
        organization_id, agent_id = self._scope()
        services.credential_revoke(
            actor=self.principal,
            organization_id=organization_id,
            agent_id=agent_id,
            credential_id=self.lookup_uuid(),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_serializer(many=False)  # GET answers one object, though the action is "list"
class ScopesSerializer(StrictSerializer):
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(AGENT_SCOPES)), max_length=32
    )


@extend_schema_view(
    list=extend_schema(responses={200: ScopesSerializer, **problem_responses(400, 401, 403, 404)}),
    create=extend_schema(
        request=ScopesSerializer,
        responses={200: ScopesSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
)
class AgentScopesViewSet(TenantViewSet):
    """The scopes an agent may request at the token endpoint (set by an organization admin)."""

    resource_type = "agent_scopes"
    required_scopes = {"list": Scope.AGENTS_READ, "create": Scope.CREDENTIALS_WRITE}
    serializer_class = ScopesSerializer
    queryset = ClientSecret.objects.none()
    pagination_class = None

    def list(self, request: Request, agent_pk: str) -> Response:
        scopes = services.client_scopes_get(
            organization_id=self.organization_id, agent_id=self.lookup_uuid("agent_pk")
        )
        return Response({"scopes": scopes})

    def create(self, request: Request, agent_pk: str) -> Response:
        payload = ScopesSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        client = services.client_scopes_set(
            actor=self.principal,
            organization_id=self.organization_id,
            agent_id=self.lookup_uuid("agent_pk"),
            scopes=list(payload.validated_data["scopes"]),
        )
        return Response({"scopes": list(client.allowed_scopes)})


class ClientMetadataSerializer(StrictSerializer):
    """The agent's OAuth client registration (OIDC Dynamic Client Registration's names)."""

    client_id = serializers.CharField(read_only=True)
    scopes = serializers.ListField(child=serializers.CharField(), read_only=True)
    id_token_signed_response_alg = serializers.ChoiceField(
        choices=SigningAlgorithm.values,
        required=False,
        help_text="The algorithm its id_tokens are signed with (default RS256).",
    )
    userinfo_signed_response_alg = serializers.ChoiceField(
        choices=["", *SigningAlgorithm.values],
        required=False,
        allow_blank=True,
        help_text="Empty: /agent-info answers JSON. An algorithm: a JWT signed with it.",
    )
    dpop_bound_access_tokens = serializers.BooleanField(
        required=False,
        help_text="True: token requests without a DPoP proof (RFC 9449) are refused, so every "
        "token the agent is issued is bound to its key.",
    )


@extend_schema_view(
    retrieve=extend_schema(
        responses={200: ClientMetadataSerializer, **problem_responses(400, 401, 403, 404)}
    ),
    partial_update=extend_schema(
        request=ClientMetadataSerializer,
        responses={200: ClientMetadataSerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
)
class AgentClientViewSet(TenantViewSet):
    """The agent's OAuth client: its scopes (set at ``/agents/{id}/scopes``), how its
    id_tokens and ``/agent-info`` answers are signed, and whether it takes DPoP-bound tokens
    only."""

    resource_type = "agent_client"
    required_scopes = {"retrieve": Scope.AGENTS_READ, "partial_update": Scope.CREDENTIALS_WRITE}
    serializer_class = ClientMetadataSerializer
    queryset = ClientSecret.objects.none()

    def retrieve(self, request: Request, agent_pk: str) -> Response:
        metadata = services.client_metadata_get(
            organization_id=self.organization_id, agent_id=self.lookup_uuid("agent_pk")
        )
        return Response(ClientMetadataSerializer(metadata).data)

    def partial_update(self, request: Request, agent_pk: str) -> Response:
        payload = ClientMetadataSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        metadata = services.client_metadata_set(
            actor=self.principal,
            organization_id=self.organization_id,
            agent_id=self.lookup_uuid("agent_pk"),
            id_token_signed_response_alg=payload.validated_data.get("id_token_signed_response_alg"),
            userinfo_signed_response_alg=payload.validated_data.get("userinfo_signed_response_alg"),
            dpop_bound_access_tokens=payload.validated_data.get("dpop_bound_access_tokens"),
        )
        return Response(ClientMetadataSerializer(metadata).data)


class AgentKeySerializer(serializers.ModelSerializer[AgentKey]):
    """A registered public key (never a private one: none is accepted)."""

    class Meta:
        model = AgentKey
        fields = ["id", "kid", "algorithm", "public_jwk", "jwks_uri", "created_at", "created_by",
                  "last_used_at"]  # fmt: skip
        read_only_fields = fields


class AgentKeyInputSerializer(StrictSerializer):
    jwk = serializers.DictField(
        required=False,
        help_text="A public JWK (RFC 7517): EC P-256 (ES256), OKP Ed25519 (EdDSA) or RSA of "
        "2048 bits or more (PS256, RS256); kid defaults to its RFC 7638 thumbprint.",
    )
    jwks_uri = serializers.CharField(
        max_length=2048, required=False,
        help_text="An https URL of a JWK Set, fetched now and then (cached) through the "
        "outbound guard.",
    )  # fmt: skip


@extend_schema_view(
    list=extend_schema(responses={200: AgentKeySerializer(many=True), **problem_responses(400, 401, 403, 404)}),
    create=extend_schema(
        request=AgentKeyInputSerializer,
        responses={201: AgentKeySerializer, **problem_responses(400, 401, 403, 404, 409)},
        description="Register a public key the agent signs private_key_jwt client assertions "
        "with (RFC 7523 2.2), or a JWKS URI; at most two at a time.",
    ),
    destroy=extend_schema(
        responses={204: None, **problem_responses(400, 401, 403, 404)},
        description="Remove the key (by kid): its assertions are refused from now on, and "
        "tokens issued on them are revoked.",
        parameters=[OpenApiParameter("kid", str, OpenApiParameter.PATH, pattern="^[^/]{1,200}$")],
    ),
)  # fmt: skip
class AgentKeyViewSet(TenantViewSet):
    """An agent's public keys for private_key_jwt: ``/agents/{id}/keys``."""

    lookup_url_kwarg = "kid"
    resource_type = "agent_key"
    required_scopes = {
        "list": Scope.AGENTS_READ,
        "create": Scope.CREDENTIALS_WRITE,
        "destroy": Scope.CREDENTIALS_WRITE,
    }
    serializer_class = AgentKeySerializer
    queryset = AgentKey.objects.none()
    pagination_class = None

    def list(self, request: Request, agent_pk: str) -> Response:
        keys = agent_key_services.key_list(
            organization_id=self.organization_id, agent_id=self.lookup_uuid("agent_pk")
        )
        return Response(AgentKeySerializer(keys, many=True).data)

    def create(self, request: Request, agent_pk: str) -> Response:
        payload = AgentKeyInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        key = agent_key_services.key_add(
            actor=self.principal, organization_id=self.organization_id,
            agent_id=self.lookup_uuid("agent_pk"),
            jwk_value=payload.validated_data.get("jwk"),
            jwks_uri=payload.validated_data.get("jwks_uri"),
        )  # fmt: skip
        return Response(AgentKeySerializer(key).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, agent_pk: str, kid: str) -> Response:
        agent_key_services.key_delete(
            actor=self.principal, organization_id=self.organization_id,
            agent_id=self.lookup_uuid("agent_pk"), kid=str(kid),
        )  # fmt: skip
        return Response(status=status.HTTP_204_NO_CONTENT)
