"""Admin for webhooks: subscriptions (created, changed and rotated through the services, the
secret shown once and never again), deliveries with filters and their attempts, and the
redeliver, test and disable actions."""

import uuid

from django import forms
from django.contrib import admin
from django.contrib.postgres.forms import SimpleArrayField
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from agentidp.admin import (
    ManagedByScope,
    admin_principal,
    run_service_action,
    scoped_to_principal,
)
from agentidp.errors import DomainError
from agentidp.principals import Principal
from organizations.choices import Scope
from organizations.models import Organization
from webhooks import services
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

    class Meta:
        model = WebhookSubscription
        fields = ["url", "event_types", "active", "description", "rate_limit"]

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


def _secret_page(
    request: HttpRequest, site: admin.AdminSite, rows: list[dict[str, str]]
) -> HttpResponse:
    """The new secrets, in this response only: never in a message (the session would keep it),
    a log or a later page."""
    response = TemplateResponse(
        request,
        "admin/webhooks/secret.html",
        {**site.each_context(request), "rows": rows, "title": "Webhook signing secrets"},
    )
    response["Cache-Control"] = "no-store"
    return response


READONLY = ("created_by", "created_at", "updated_at", "secret_rotated_at",
            "previous_secret_expires_at", "failing_since", "disabled_at", "disabled_reason")  # fmt: skip


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(
    ManagedByScope[WebhookSubscription], admin.ModelAdmin[WebhookSubscription]
):
    """Only a principal holding ``webhooks:manage`` (owners and admins of the organization,
    platform staff) sees webhooks in the admin, as in the API."""

    admin_scope = Scope.WEBHOOKS_MANAGE
    form = SubscriptionForm
    list_display = ["url", "organization", "active", "event_types", "rate_limit",
                    "disabled_reason", "failing_since", "created_at"]  # fmt: skip
    list_filter = ["active", "disabled_reason", "created_at"]
    search_fields = ["url", "description"]
    readonly_fields = READONLY
    actions = ["send_test", "rotate_secret", "disable"]
    list_select_related = ["organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookSubscription]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_fields(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> tuple[str, ...]:
        editable = ("url", "event_types", "active", "description", "rate_limit")
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
        if admin_principal(request).is_platform and "for_organization" in form.base_fields:
            field = form.base_fields["for_organization"]
            assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 - declared above
            field.queryset = Organization.objects.order_by("slug")
            field.required = True
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

    def save_model(
        self, request: HttpRequest, obj: WebhookSubscription,
        form: forms.ModelForm[WebhookSubscription], change: bool,
    ) -> None:  # fmt: skip
        data = form.cleaned_data
        actor = admin_principal(request)
        if change:
            changes = {
                f: data[f] for f in form.changed_data if f in services.SUBSCRIPTION_UPDATABLE
            }
            saved = services.subscription_update(
                actor=actor, organization_id=obj.organization_id, subscription_id=obj.id,
                changes=changes,
            )  # fmt: skip
        else:
            issued = services.subscription_create(
                actor=actor, organization_id=self._organization_id(request, form),
                url=data["url"], event_types=list(data["event_types"]),
                description=data.get("description") or "", active=data.get("active", True),
                rate_limit=data.get("rate_limit"),
            )  # fmt: skip
            saved = issued.subscription
            request._webhook_secret = issued.secret  # type: ignore[attr-defined]
        obj.pk, obj._state.adding = saved.pk, False

    def response_add(
        self, request: HttpRequest, obj: WebhookSubscription, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(request, "_webhook_secret", "")
        return _secret_page(request, self.admin_site, [{"url": obj.url, "secret": secret}])

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
        rows: list[dict[str, str]] = []

        def rotate(actor: Principal, subscription: WebhookSubscription) -> None:
            issued = services.subscription_secret_rotate(
                actor=actor, organization_id=subscription.organization_id,
                subscription_id=subscription.id,
            )  # fmt: skip
            rows.append({"url": subscription.url, "secret": issued.secret})

        run_service_action(self, request, queryset, rotate, "Rotated")
        return _secret_page(request, self.admin_site, rows) if rows else None


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
    admin_scope = Scope.WEBHOOKS_MANAGE
    list_display = ["event_type", "subscription", "status", "attempts", "last_http_status",
                    "next_attempt_at", "created_at", "completed_at"]  # fmt: skip
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
