"""API for webhook subscriptions and their deliveries (scope ``webhooks:manage``).

The signing secret appears once, in the response that creates or rotates it.
"""

import json
from datetime import datetime
from typing import cast

from drf_spectacular.types import OpenApiTypes
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
    CursorPagination,
    PageNumberPagination,
    QuerySerializer,
    StrictSerializer,
    TenantViewSet,
)
from agentidp.errors import JSONValue
from agentidp.schema import problem_responses
from organizations.choices import Scope
from webhooks import selectors, services
from webhooks.choices import (
    FAMILIES,
    PUBLISHED,
    DeliveryStatus,
    SubscriptionDisabledReason,
    WebhookFormat,
)
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription

EVENT_TYPES_HELP = "Event types (agent.created), families (agent.*) or * for every event."
SUBSCRIBABLE: list[str] = ["*", *sorted(PUBLISHED), *sorted(f"{family}.*" for family in FAMILIES)]


@extend_schema_field(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": services.MAX_EVENT_TYPES,
        "items": {"type": "string", "enum": SUBSCRIBABLE},
        "description": EVENT_TYPES_HELP,
    }
)
class EventTypesField(serializers.ListField):
    """What ``webhooks.services.event_types_checked`` accepts, described for the schema."""


class SubscriptionSerializer(serializers.ModelSerializer[WebhookSubscription]):
    """A subscription as the API shows it: never its secret, nor where the secret is kept."""

    disabled_reason = serializers.ChoiceField(
        choices=[("", "Not disabled"), *SubscriptionDisabledReason.choices],
        read_only=True,
        help_text="Why it was disabled; empty while it is not.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["id", "url", "event_types", "active", "description", "rate_limit", "format",
                  "created_at", "updated_at", "created_by", "secret_rotated_at",
                  "previous_secret_expires_at", "failing_since", "disabled_at",
                  "disabled_reason"]  # fmt: skip
        read_only_fields = fields


class SubscriptionWithSecretSerializer(serializers.Serializer):  # type: ignore[type-arg]
    subscription = SubscriptionSerializer()
    secret = serializers.CharField(
        help_text="whsec_ and base64 of 32 random bytes: the Standard Webhooks signing secret. "
        "Shown once; store it now."
    )


class SubscriptionInputSerializer(StrictSerializer):
    url = serializers.CharField(
        max_length=2048,
        help_text="https URL of the receiver, on a public address and port 443 or 80 (400 "
        "naming the rule otherwise; the deployment's SSRF settings can allow more).",
    )
    event_types = EventTypesField(
        child=serializers.CharField(max_length=100), min_length=1,
        max_length=services.MAX_EVENT_TYPES,
    )  # fmt: skip
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    active = serializers.BooleanField(required=False, default=True)
    rate_limit = serializers.IntegerField(
        min_value=1, max_value=10000, required=False, allow_null=True, default=None,
        help_text="At most this many deliveries a second (null: no limit).",
    )  # fmt: skip
    format = serializers.ChoiceField(
        choices=WebhookFormat.choices, required=False, default=WebhookFormat.STANDARD,
        help_text="standard: the Standard Webhooks JSON envelope of every subscribed event. set:"
        " for each revocation among them (token.revoked, agent.tokens_revoked, agent.suspended,"
        " agent.decommissioned, credential.revoked, agents.kill_switch), a Security Event Token"
        " (RFC 8417, application/secevent+jwt, signed by a key in the JWKS) with a CAEP"
        " session-revoked event naming the tree's root and how many tokens went with it.",
    )  # fmt: skip


class SubscriptionUpdateSerializer(SubscriptionInputSerializer):
    pass


class RotateSecretSerializer(StrictSerializer):
    overlap_seconds = serializers.IntegerField(
        min_value=0, max_value=7 * 86400, required=False, allow_null=True, default=None,
        help_text="How long the old secret keeps signing beside the new one (default one day).",
    )  # fmt: skip


class AttemptSerializer(serializers.ModelSerializer[WebhookAttempt]):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "duration_ms", "outcome", "http_status",
                  "response_excerpt", "error"]  # fmt: skip
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer[WebhookDelivery]):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "event_id", "event_type", "occurred_at", "status", "attempts",
                  "next_attempt_at", "last_http_status", "last_error", "created_at",
                  "completed_at"]  # fmt: skip
        read_only_fields = fields


class DeliveryDetailSerializer(DeliverySerializer):
    payload = serializers.SerializerMethodField(help_text="The envelope sent, as JSON.")
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "payload", "attempt_log"]
        read_only_fields = fields

    def get_payload(self, delivery: WebhookDelivery) -> dict[str, JSONValue]:
        return cast(dict[str, JSONValue], json.loads(delivery.body))


class DeliveryQuerySerializer(QuerySerializer):
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    event_type = serializers.CharField(max_length=100, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class DeliveryCursorPagination(CursorPagination):
    """Stable cursors over deliveries, newest first."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def position_read(self, position: str) -> object:
        return datetime.fromisoformat(position)


def _with_secret(issued: services.IssuedSecret) -> dict[str, object]:
    return {
        "subscription": SubscriptionSerializer(issued.subscription).data,
        "secret": issued.secret,
    }


NO_STORE = {"Cache-Control": "no-store"}


@extend_schema_view(
    list=extend_schema(responses={200: SubscriptionSerializer(many=True), **problem_responses(400, 401, 403)}),
    create=extend_schema(
        request=SubscriptionInputSerializer,
        responses={201: SubscriptionWithSecretSerializer, **problem_responses(400, 401, 403, 409)},
    ),
    retrieve=extend_schema(responses={200: SubscriptionSerializer, **problem_responses(400, 401, 403, 404)}),
    partial_update=extend_schema(
        request=SubscriptionUpdateSerializer,
        responses={200: SubscriptionSerializer, **problem_responses(400, 401, 403, 404)},
    ),
    destroy=extend_schema(responses={204: None, **problem_responses(400, 401, 403, 404)}),
    test=extend_schema(
        request=None,
        responses={202: DeliverySerializer, **problem_responses(400, 401, 403, 404)},
        description="Send a webhook.ping event to this subscription only.",
    ),
    rotate_secret=extend_schema(
        request=RotateSecretSerializer,
        responses={200: SubscriptionWithSecretSerializer, **problem_responses(400, 401, 403, 404)},
        description="A new signing secret; during the overlap both signatures are sent.",
    ),
)  # fmt: skip
class WebhookViewSet(TenantViewSet):
    """The caller's organization's webhook subscriptions."""

    resource_type = "webhook"
    required_scopes = {
        **dict.fromkeys(["list", "retrieve"], Scope.WEBHOOKS_READ),
        **dict.fromkeys(
            ["create", "partial_update", "destroy", "test", "rotate_secret"], Scope.WEBHOOKS_MANAGE
        ),
    }
    serializer_class = SubscriptionSerializer
    pagination_class = PageNumberPagination
    queryset = WebhookSubscription.objects.none()

    def list(self, request: Request) -> Response:
        subscriptions = selectors.subscription_list(organization_id=self.organization_id)
        page = self.paginate_queryset(subscriptions) or []
        return self.get_paginated_response(SubscriptionSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        payload = SubscriptionInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        issued = services.subscription_create(
            actor=self.principal, organization_id=self.organization_id, **payload.validated_data
        )
        return Response(_with_secret(issued), status=status.HTTP_201_CREATED, headers=NO_STORE)

    def retrieve(self, request: Request, pk: str) -> Response:
        subscription = services.subscription_get(
            organization_id=self.organization_id, subscription_id=self.lookup_uuid()
        )
        return Response(SubscriptionSerializer(subscription).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        payload = SubscriptionUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = {k: v for k, v in payload.validated_data.items() if k in request.data}
        subscription = services.subscription_update(
            actor=self.principal,
            organization_id=self.organization_id,
            subscription_id=self.lookup_uuid(),
            changes=changes,
        )
        return Response(SubscriptionSerializer(subscription).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.subscription_delete(
            actor=self.principal, organization_id=self.organization_id,
            subscription_id=self.lookup_uuid(),
        )  # fmt: skip
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        delivery = services.subscription_test(
            actor=self.principal, organization_id=self.organization_id,
            subscription_id=self.lookup_uuid(),
        )  # fmt: skip
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str) -> Response:
        payload = RotateSecretSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        issued = services.subscription_secret_rotate(
            actor=self.principal,
            organization_id=self.organization_id,
            subscription_id=self.lookup_uuid(),
            overlap_seconds=payload.validated_data["overlap_seconds"],
        )
        return Response(_with_secret(issued), headers=NO_STORE)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=DeliveryStatus.values),
            OpenApiParameter("event_type", str, description="Exact type, or a family like agent.*"),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601; inclusive"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601; exclusive"),
        ],
        responses={200: DeliverySerializer(many=True), **problem_responses(400, 401, 403, 404)},
    ),
    retrieve=extend_schema(responses={200: DeliveryDetailSerializer, **problem_responses(400, 401, 403, 404)}),
    redeliver=extend_schema(
        request=None,
        responses={202: DeliverySerializer, **problem_responses(400, 401, 403, 404)},
        description="Send the delivery again now, with a fresh retry schedule.",
    ),
)  # fmt: skip
class WebhookDeliveryViewSet(TenantViewSet):
    """Deliveries of one subscription, with each attempt's outcome."""

    resource_type = "webhook_delivery"
    required_scopes = {
        **dict.fromkeys(["list", "retrieve"], Scope.WEBHOOKS_READ),
        "redeliver": Scope.WEBHOOKS_MANAGE,
    }
    serializer_class = DeliverySerializer
    pagination_class = DeliveryCursorPagination
    queryset = WebhookDelivery.objects.none()

    def list(self, request: Request, webhook_pk: str) -> Response:
        query = DeliveryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        subscription_id = self.lookup_uuid("webhook_pk")
        services.subscription_get(
            organization_id=self.organization_id, subscription_id=subscription_id
        )
        deliveries = selectors.delivery_list(
            organization_id=self.organization_id,
            subscription_id=subscription_id,
            **query.validated_data,
        )
        page = self.paginate_queryset(deliveries) or []
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    def retrieve(self, request: Request, webhook_pk: str, pk: str) -> Response:
        delivery = services.delivery_get(
            organization_id=self.organization_id,
            subscription_id=self.lookup_uuid("webhook_pk"),
            delivery_id=self.lookup_uuid(),
        )
        return Response(DeliveryDetailSerializer(delivery).data)

    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, webhook_pk: str, pk: str) -> Response:
        delivery = services.delivery_redeliver(
            actor=self.principal,
            organization_id=self.organization_id,
            subscription_id=self.lookup_uuid("webhook_pk"),
            delivery_id=self.lookup_uuid(),
        )
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
