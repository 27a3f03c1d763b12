"""Admin for webhooks: subscriptions (created, changed and rotated through the services, the
secret shown once and never again), deliveries with filters and their attempts, and the
redeliver, test and disable actions. Read with ``webhooks:read`` (auditors too), changed with
``webhooks:manage``."""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.postgres.forms import SimpleArrayField
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse

from agentidp.admin import (
    ConfirmedDelete,
    ManagedByScope,
    ServiceSaves,
    admin_principal,
    confirmation_page,
    confirmed,
    organization_choice,
    run_service_action,
    scoped_to_principal,
    shown_once_page,
)
from agentidp.errors import DomainError
from agentidp.outbound import outbound_policy
from agentidp.principals import Principal
from agentidp.words import plural
from organizations.choices import Scope
from organizations.models import Organization
from webhooks import services
from webhooks.choices import DeliveryStatus, WebhookFormat
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription


class SubscriptionForm(forms.ModelForm[WebhookSubscription]):
    """The editable fields; event types comma-separated. The services check every rule."""

    event_types = SimpleArrayField(
        forms.CharField(max_length=100),
        help_text="Comma-separated: agent.created, agent.* or * for every event.",
    )
    for_organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(), required=False, label="Organization"
    )
    format = forms.ChoiceField(
        choices=WebhookFormat.choices, required=False, initial=WebhookFormat.STANDARD,
        help_text="set: a signed Security Event Token (RFC 8417, CAEP session-revoked) for each"
        " revocation among the subscribed events, for Shared Signals receivers.",
    )  # fmt: skip

    class Meta:
        model = WebhookSubscription
        fields = ["url", "event_types", "active", "description", "rate_limit", "format"]

    def clean_url(self) -> str:
        try:
            return services.url_checked(self.cleaned_data.get("url"))
        except DomainError as exc:
            raise _refusal(exc) from exc

    def clean_event_types(self) -> list[str]:
        try:
            return services.event_types_checked(list(self.cleaned_data.get("event_types") or []))
        except DomainError as exc:
            raise _refusal(exc) from exc


def _refusal(exc: DomainError) -> forms.ValidationError:
    """The service's reasons, as the form's error on the field."""
    return forms.ValidationError(
        [m for problems in exc.errors.values() for m in problems] or [exc.detail]
    )


def _secret_page(request: HttpRequest, rows: list[tuple[str, str]]) -> HttpResponse:
    """The new secrets, in this response only: never in a message (the session would keep it),
    a log or a later page."""
    return shown_once_page(
        request, title="Webhook signing secrets",
        note="Copy each secret to its receiver now: it is kept only in the secret store and is "
        "never shown again. Receivers verify deliveries with it (Standard Webhooks: webhook-id, "
        "webhook-timestamp, webhook-signature). After a rotation the old secret keeps signing "
        "beside the new one until its overlap ends.",
        rows=rows, back_url=reverse("admin:webhooks_webhooksubscription_changelist"),
        back_label="Back to webhook subscriptions",
    )  # fmt: skip


def _url_rules() -> str:
    policy = outbound_policy()
    scheme = "https (or http, which this deployment allows)" if policy.allow_http else "https"
    return (
        f"Where events are POSTed: {scheme}, a public address (never loopback, private or "
        "link-local networks such as 169.254.169.254), on an allowed port; checked again at "
        "every delivery."
    )


READONLY = ("created_by", "created_at", "updated_at", "secret_rotated_at",
            "previous_secret_expires_at", "failing_since", "disabled_at", "disabled_reason")  # fmt: skip


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(
    ServiceSaves[WebhookSubscription],
    ConfirmedDelete[WebhookSubscription],
    ManagedByScope[WebhookSubscription],
    admin.ModelAdmin[WebhookSubscription],
):
    """Seen with ``webhooks:read`` (auditors), managed with ``webhooks:manage`` (owners and
    admins of the organization, platform staff), as in the API. A subscription's page sends it
    a test event, lists its deliveries and deletes it after saying what goes with it."""

    admin_scope, write_scope = Scope.WEBHOOKS_READ, Scope.WEBHOOKS_MANAGE
    change_form_template = "admin/webhooks/webhooksubscription/change_form.html"
    form = SubscriptionForm
    list_display = ["url", "organization", "active", "event_types", "format", "rate_limit",
                    "disabled_reason", "failing_since", "created_at"]  # fmt: skip
    list_filter = ["active", "disabled_reason", "created_at"]
    search_fields = ["url", "description"]
    readonly_fields = READONLY
    actions = ["send_test", "rotate_secret", "disable"]
    list_select_related = ["organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookSubscription]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<uuid:subscription_id>/test/", wrap(self.test_view), name="webhooks_webhooksubscription_test"),
            *super().get_urls(),
        ]  # fmt: skip

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, object] | None = None,
    ) -> HttpResponse:
        deliveries = reverse("admin:webhooks_webhookdelivery_changelist")
        context = {
            **(extra_context or {}),
            "webhook_writer": self.has_write_permission(request),
            "deliveries_url": f"{deliveries}?subscription__id__exact={object_id}",
        }
        return super().change_view(request, object_id, form_url, context)

    def _subscription(
        self, request: HttpRequest, subscription_id: uuid.UUID
    ) -> WebhookSubscription:
        found = self.get_queryset(request).filter(id=subscription_id).first()
        if found is None or not self.has_write_permission(request):
            raise Http404("No such subscription.")
        return found

    def test_view(self, request: HttpRequest, subscription_id: uuid.UUID) -> HttpResponse:
        """Send ``webhook.ping`` to this subscription alone, then show its delivery."""
        subscription = self._subscription(request, subscription_id)
        page = reverse("admin:webhooks_webhooksubscription_change", args=[subscription.id])
        if confirmed(request):
            try:
                delivery = services.subscription_test(
                    actor=admin_principal(request), organization_id=subscription.organization_id,
                    subscription_id=subscription.id,
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                return HttpResponseRedirect(page)
            self.message_user(
                request, "Sent a test event (webhook.ping). Its delivery is below: reload the "
                "page in a moment for the receiver's answer.", messages.SUCCESS,
            )  # fmt: skip
            return HttpResponseRedirect(
                reverse("admin:webhooks_webhookdelivery_change", args=[delivery.id])
            )
        return confirmation_page(
            request, title=f"Send a test event to {subscription.url}",
            question=f"Send a webhook.ping event to {subscription.url}?",
            consequences=[
                "Delivers one signed webhook.ping event to this subscription only (no other "
                "subscription receives it).",
                "The delivery and the receiver's answer are shown next.",
            ],
            confirm_label="Send the test event", back_url=page, back_label=subscription.url,
            danger=False,
        )  # fmt: skip

    def delete_consequences(self, request: HttpRequest, obj: WebhookSubscription) -> list[str]:
        counts = WebhookDelivery.objects.filter(
            organization_id=obj.organization_id, subscription_id=obj.id
        ).aggregate(
            total=Count("id"),
            pending=Count("id", filter=Q(status=DeliveryStatus.PENDING)),
            dead=Count("id", filter=Q(status=DeliveryStatus.DEAD_LETTER)),
        )
        return [
            f"No more events are sent to {obj.url}.",
            f"Deletes its {plural(counts['total'], 'delivery record')}: "
            f"{plural(counts['pending'], 'pending delivery', 'pending deliveries')} will never "
            f"be sent and {plural(counts['dead'], 'dead-lettered delivery', 'dead-lettered deliveries')} "
            "can no longer be replayed.",
            "Destroys its signing secret in the secret store.",
            "The audit log keeps the subscription's history (webhook.created, webhook.deleted).",
        ]

    def get_fields(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> tuple[str, ...]:
        editable = ("url", "event_types", "active", "description", "rate_limit", "format")
        if obj is None:
            return (
                ("for_organization",) if admin_principal(request).is_platform else ()
            ) + editable
        return (*editable, *READONLY)

    def get_form(
        self, request: HttpRequest, obj: WebhookSubscription | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[WebhookSubscription]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        if "url" in form.base_fields:
            form.base_fields["url"].help_text = _url_rules()
        organization_choice(form, request, adding=obj is None)
        return form

    def _organization_id(
        self, request: HttpRequest, form: forms.ModelForm[WebhookSubscription]
    ) -> uuid.UUID:
        principal = admin_principal(request)
        chosen = form.cleaned_data.get("for_organization")
        if principal.is_platform and isinstance(chosen, Organization):
            return chosen.id
        if principal.organization_id is None:
            raise PermissionError("a staff login without an organization")
        return principal.organization_id

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[WebhookSubscription], change: bool
    ) -> WebhookSubscription:
        data = form.cleaned_data
        actor = admin_principal(request)
        if change:
            obj = form.instance
            changes = {
                f: data[f] for f in form.changed_data
                if f in services.SUBSCRIPTION_UPDATABLE and not (f == "format" and not data[f])
            }  # fmt: skip
            return services.subscription_update(
                actor=actor, organization_id=obj.organization_id, subscription_id=obj.id,
                changes=changes,
            )  # fmt: skip
        issued = services.subscription_create(
            actor=actor, organization_id=self._organization_id(request, form),
            url=data["url"], event_types=list(data["event_types"]),
            description=data.get("description") or "", active=data.get("active", True),
            rate_limit=data.get("rate_limit"),
            format=data.get("format") or WebhookFormat.STANDARD,
        )  # fmt: skip
        request._webhook_secret = issued.secret  # type: ignore[attr-defined]
        return issued.subscription

    def response_add(
        self, request: HttpRequest, obj: WebhookSubscription, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(request, "_webhook_secret", "")
        return _secret_page(request, [(obj.url, secret)])

    def delete_model(self, request: HttpRequest, obj: WebhookSubscription) -> None:
        services.subscription_delete(
            actor=admin_principal(request), organization_id=obj.organization_id,
            subscription_id=obj.id,
        )  # fmt: skip

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]
    ) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    @admin.action(permissions=["write"], description="Send a test event (webhook.ping)")
    def send_test(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        run_service_action(
            self, request, queryset,
            lambda actor, s: services.subscription_test(
                actor=actor, organization_id=s.organization_id, subscription_id=s.id
            ),
            "Sent a test event to",
        )  # fmt: skip

    @admin.action(permissions=["write"], description="Disable selected subscriptions")
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        run_service_action(
            self, request, queryset,
            lambda actor, s: services.subscription_disable(
                actor=actor, organization_id=s.organization_id, subscription_id=s.id
            ),
            "Disabled",
        )  # fmt: skip

    @admin.action(
        permissions=["write"], description="Rotate signing secrets (new secrets shown once)"
    )
    def rotate_secret(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]
    ) -> HttpResponse | None:
        rows: list[tuple[str, str]] = []

        def rotate(actor: Principal, subscription: WebhookSubscription) -> None:
            issued = services.subscription_secret_rotate(
                actor=actor, organization_id=subscription.organization_id,
                subscription_id=subscription.id,
            )  # fmt: skip
            rows.append((subscription.url, issued.secret))

        run_service_action(self, request, queryset, rotate, "Rotated")
        return _secret_page(request, rows) if rows else None


class AttemptInline(admin.TabularInline[WebhookAttempt, WebhookDelivery]):
    model = WebhookAttempt
    fields = (
        "number",
        "started_at",
        "duration_ms",
        "outcome",
        "http_status",
        "response_excerpt",
        "error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ManagedByScope[WebhookDelivery], admin.ModelAdmin[WebhookDelivery]):
    """Every delivery with its status and each attempt's answer (status, an excerpt of the
    body, the error); a dead-lettered one is replayed from its page or in bulk."""

    admin_scope, write_scope = Scope.WEBHOOKS_READ, Scope.WEBHOOKS_MANAGE
    change_form_template = "admin/webhooks/webhookdelivery/change_form.html"
    list_display = ["event_type", "subscription", "status", "attempts", "last_http_status",
                    "last_error", "next_attempt_at", "created_at", "completed_at"]  # fmt: skip
    list_filter = ["status", "event_type", "created_at", "subscription"]
    search_fields = ["event_id", "subscription__url"]
    fields = ("subscription", "event_id", "event_type", "occurred_at", "status", "attempts",
              "next_attempt_at", "last_http_status", "last_error", "created_at",
              "completed_at", "body")  # fmt: skip
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["redeliver"]
    list_select_related = ["subscription"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<uuid:delivery_id>/redeliver/", wrap(self.redeliver_view), name="webhooks_webhookdelivery_redeliver"),
            *super().get_urls(),
        ]  # fmt: skip

    def redeliver_view(self, request: HttpRequest, delivery_id: uuid.UUID) -> HttpResponse:
        delivery = (
            self.get_queryset(request).select_related("subscription").filter(id=delivery_id).first()
        )
        if delivery is None or not self.has_write_permission(request):
            raise Http404("No such delivery.")
        page = reverse("admin:webhooks_webhookdelivery_change", args=[delivery.id])
        if confirmed(request):
            try:
                services.delivery_redeliver(
                    actor=admin_principal(request), organization_id=delivery.organization_id,
                    subscription_id=delivery.subscription_id, delivery_id=delivery.id,
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                self.message_user(
                    request, "Queued again: reload the page in a moment for the answer.",
                    messages.SUCCESS,
                )  # fmt: skip
            return HttpResponseRedirect(page)
        return confirmation_page(
            request, title=f"Send {delivery.event_type} again?",
            question=f"Send this {delivery.event_type} delivery to {delivery.subscription.url} again?",
            consequences=[
                f"Sends the same body with the same webhook-id now ({delivery.get_status_display().lower()} "
                f"after {plural(delivery.attempts, 'attempt')} so far), with a fresh retry schedule.",
                "A receiver that already has it can tell by its webhook-id.",
            ],
            confirm_label="Send again", back_url=page, back_label=str(delivery), danger=False,
        )  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False

    @admin.action(permissions=["write"], description="Redeliver selected deliveries now")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        run_service_action(
            self, request, queryset,
            lambda actor, d: services.delivery_redeliver(
                actor=actor, organization_id=d.organization_id,
                subscription_id=d.subscription_id, delivery_id=d.id,
            ),
            "Queued again",
        )  # fmt: skip
