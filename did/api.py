"""API for an agent's DID keys: list them, rotate (custodial) or register the agent's own key."""

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agentidp.api import StrictSerializer, TenantViewSet
from agentidp.schema import problem_responses
from agents.services import agent_get
from did import services
from did.models import AgentDidKey
from organizations.choices import Scope


class DidKeySerializer(serializers.ModelSerializer[AgentDidKey]):
    """A DID key's public metadata (never a private part: we keep those in the secret store)."""

    class Meta:
        model = AgentDidKey
        fields = ["kid", "algorithm", "status", "custodial", "public_jwk", "created_at",
                  "retired_at"]  # fmt: skip
        read_only_fields = fields


_COORDINATE = {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}  # 32 bytes, base64url
# Other public members (kid, alg, use, ...) are ignored; a private one refuses the key.
_NO_PRIVATE = {
    "not": {
        "anyOf": [{"required": [name]} for name in ("d", "p", "q", "dp", "dq", "qi", "k", "oth")]
    }
}
PUBLIC_KEY_JWK_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "title": "Ed25519",
            "properties": {
                "kty": {"enum": ["OKP"]},
                "crv": {"enum": ["Ed25519"]},
                "x": _COORDINATE,
            },
            "required": ["kty", "crv", "x"],
            **_NO_PRIVATE,
        },
        {
            "type": "object",
            "title": "P-256",
            "description": "x and y must be a point on the curve (400 otherwise).",
            "properties": {
                "kty": {"enum": ["EC"]},
                "crv": {"enum": ["P-256"]},
                "x": _COORDINATE,
                "y": _COORDINATE,
            },
            "required": ["kty", "crv", "x", "y"],
            **_NO_PRIVATE,
        },
    ],
    "description": "The agent's own public key (Ed25519 or P-256 JWK): we never see its private "
    "part (private members are refused). Omitted: we generate the key and keep its private part "
    "in the secret store.",
}


@extend_schema_field(PUBLIC_KEY_JWK_SCHEMA)
class PublicKeyJwkField(serializers.DictField):
    """An agent's public JWK, as ``did.services`` checks it."""


class DidKeyRotateSerializer(StrictSerializer):
    public_key_jwk = PublicKeyJwkField(
        required=False,
        help_text="The agent's own public key (Ed25519 or P-256 JWK): we never see its private "
        "part. Omitted: we generate the key and keep its private part in the secret store.",
    )


@extend_schema_view(
    list=extend_schema(
        responses={200: DidKeySerializer(many=True), **problem_responses(400, 401, 403, 404)}
    ),
    create=extend_schema(
        request=DidKeyRotateSerializer,
        responses={201: DidKeySerializer, **problem_responses(400, 401, 403, 404, 409)},
    ),
)
class AgentDidKeysViewSet(TenantViewSet):
    """The keys of an agent's DID: the active one and those retired but still listed."""

    resource_type = "agent_did_key"
    required_scopes = {"list": Scope.AGENTS_READ, "create": Scope.CREDENTIALS_WRITE}
    serializer_class = DidKeySerializer
    queryset = AgentDidKey.objects.none()
    pagination_class = None

    def list(self, request: Request, agent_pk: str) -> Response:
        agent_id = self.lookup_uuid("agent_pk")
        keys = AgentDidKey.objects.filter(organization_id=self.organization_id, agent_id=agent_id)
        if not keys.exists():
            agent_get(organization_id=self.organization_id, agent_id=agent_id)  # 404 if none
        return Response(DidKeySerializer(keys, many=True).data)

    def create(self, request: Request, agent_pk: str) -> Response:
        payload = DidKeyRotateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        key = services.did_key_rotate(
            actor=self.principal,
            organization_id=self.organization_id,
            agent_id=self.lookup_uuid("agent_pk"),
            public_jwk=payload.validated_data.get("public_key_jwk"),
        )
        return Response(DidKeySerializer(key).data, status=status.HTTP_201_CREATED)
