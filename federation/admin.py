"""Admin for federation partners: registered and changed through the services (so the metadata,
keys and DID are fetched and checked, and every change is audited), the keys' last fetch and
its result, and refetch, suspend and reactivate actions."""

import uuid
from typing import ClassVar

from django import forms
from django.contrib import admin
from django.contrib.postgres.forms import SimpleArrayField
from django.db.models import QuerySet
from django.http import HttpRequest

from agentidp.admin import ManagedByScope, admin_principal, run_service_action, scoped_to_principal
from agentidp.errors import DomainError
from agentidp.principals import Principal
from federation import services
from federation.choices import PartnerStatus
from federation.models import FederationPartner
from organizations.choices import Scope
from organizations.models import Organization

SCOPE_CHOICES = [(s, s) for s in sorted(services.FEDERABLE_SCOPES)]


class PartnerForm(forms.ModelForm[FederationPartner]):
    """Registration (add) or a change; the services check every rule and do the write, so a
    partner that cannot be reached or fails a check is a form error and nothing is stored."""

    jwks_uri = forms.CharField(
        max_length=2048, required=False, help_text="Discovered from the issuer when empty."
    )
    allowed_organizations = SimpleArrayField(
        forms.CharField(max_length=200), required=False,
        help_text="Comma-separated organization_id values of the partner (empty: all).",
    )  # fmt: skip
    allowed_scopes = forms.MultipleChoiceField(
        choices=SCOPE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )
    for_organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(), required=False, label="Organization"
    )
    actor: ClassVar[Principal | None] = None

    class Meta:
        model = FederationPartner
        fields = ["issuer", "jwks_uri", "did", "allowed_organizations", "allowed_scopes",
                  "read_only", "expires_at", "jwks_uri_other_host", "notes", "status"]  # fmt: skip

    def _organization_id(self) -> uuid.UUID:
        assert self.actor is not None  # noqa: S101 - set by get_form
        chosen = self.cleaned_data.get("for_organization")
        if self.actor.is_platform and isinstance(chosen, Organization):
            return chosen.id
        if self.actor.organization_id is None:
            raise forms.ValidationError("Choose an organization.")
        return self.actor.organization_id

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if self.errors:
            return data
        assert self.actor is not None  # noqa: S101 - set by get_form
        try:
            if self.instance._state.adding:
                self.instance = services.partner_register(
                    actor=self.actor, organization_id=self._organization_id(),
                    issuer=str(data.get("issuer") or ""), jwks_uri=str(data.get("jwks_uri") or ""),
                    did=str(data.get("did") or ""),
                    allowed_organizations=list(data.get("allowed_organizations") or []),
                    allowed_scopes=list(data.get("allowed_scopes") or []),
                    expires_at=data.get("expires_at"),
                    notes=str(data.get("notes") or ""), read_only=bool(data.get("read_only")),
                    jwks_uri_other_host=bool(data.get("jwks_uri_other_host")),
                )  # fmt: skip
            else:
                changes = {f: data[f] for f in self.changed_data if f in services.PARTNER_UPDATABLE}
                if "allowed_scopes" in changes or "allowed_organizations" in changes:
                    changes = {
                        k: list(v) if isinstance(v, list | tuple) else v for k, v in changes.items()
                    }
                if changes:
                    self.instance = services.partner_update(
                        actor=self.actor, organization_id=self.instance.organization_id,
                        partner_id=self.instance.id, changes=changes,
                    )  # fmt: skip
        except DomainError as exc:
            messages = [m for problems in exc.errors.values() for m in problems] or [exc.detail]
            raise forms.ValidationError(messages) from exc
        return data


READONLY = ("created_by", "created_at", "updated_at", "key_ids", "keys_fetched_at",
            "last_fetch_at", "last_fetch_result", "last_fetch_error")  # fmt: skip


@admin.register(FederationPartner)
class FederationPartnerAdmin(
    ManagedByScope[FederationPartner], admin.ModelAdmin[FederationPartner]
):
    admin_scope = Scope.FEDERATION_MANAGE
    form = PartnerForm
    list_display = ["issuer", "organization", "current_status", "expires_at", "read_only",
                    "keys_fetched_at", "last_fetch_result", "last_fetch_error"]  # fmt: skip
    list_filter = ["status", "last_fetch_result", "read_only"]
    search_fields = ["issuer", "did", "notes"]
    readonly_fields = READONLY
    actions = ["refetch_keys", "suspend", "reactivate"]
    list_select_related = ["organization"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FederationPartner]:
        return scoped_to_principal(request, super().get_queryset(request))

    @admin.display(description="status")
    def current_status(self, partner: FederationPartner) -> str:
        return partner.effective_status()

    @admin.display(description="keys (kid)")
    def key_ids(self, partner: FederationPartner) -> str:
        keys = partner.jwks.get("keys")
        return ", ".join(
            str(key.get("kid")) for key in (keys if isinstance(keys, list) else [])
            if isinstance(key, dict)
        )  # fmt: skip

    def get_fields(
        self, request: HttpRequest, obj: FederationPartner | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            registration = ("issuer", "jwks_uri", "did", "allowed_organizations",
                            "allowed_scopes", "read_only", "expires_at", "jwks_uri_other_host",
                            "notes")  # fmt: skip
            platform = admin_principal(request).is_platform
            return (("for_organization",) if platform else ()) + registration
        return ("issuer", "jwks_uri", "did", "status", "allowed_organizations", "allowed_scopes",
                "read_only", "expires_at", "notes", *READONLY)  # fmt: skip

    def get_readonly_fields(
        self, request: HttpRequest, obj: FederationPartner | None = None
    ) -> tuple[str, ...]:
        return READONLY if obj is None else ("issuer", "jwks_uri", "did", *READONLY)

    def get_form(
        self, request: HttpRequest, obj: FederationPartner | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[FederationPartner]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        actor = admin_principal(request)
        if "status" in form.base_fields:
            status = form.base_fields["status"]
            assert isinstance(status, forms.ChoiceField)  # noqa: S101 - a choices field
            status.choices = [
                (PartnerStatus.ACTIVE, "Active"),
                (PartnerStatus.SUSPENDED, "Suspended"),
            ]
        if actor.is_platform and "for_organization" in form.base_fields:
            field = form.base_fields["for_organization"]
            assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 - declared above
            field.queryset = Organization.objects.order_by("slug")
            field.required = True
        return type("BoundPartnerForm", (form,), {"actor": actor})

    def save_model(
        self, request: HttpRequest, obj: FederationPartner,
        form: forms.ModelForm[FederationPartner], change: bool,
    ) -> None:  # fmt: skip
        """The form's clean() already wrote through the services."""
        saved = form.instance
        obj.pk, obj._state.adding = saved.pk, False

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm[FederationPartner],
        formsets: object, change: bool,
    ) -> None:  # fmt: skip
        return  # no related objects; nothing beyond what the services wrote

    def delete_model(self, request: HttpRequest, obj: FederationPartner) -> None:
        services.partner_delete(
            actor=admin_principal(request), organization_id=obj.organization_id,
            partner_id=obj.id,
        )  # fmt: skip

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FederationPartner]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    @admin.action(permissions=["write"], description="Refetch keys now")
    def refetch_keys(self, request: HttpRequest, queryset: QuerySet[FederationPartner]) -> None:
        run_service_action(
            self, request, queryset,
            lambda actor, p: services.partner_keys_refresh(
                organization_id=p.organization_id, partner_id=p.id
            ),
            "Refetched the keys of",
        )  # fmt: skip

    def _set_status(
        self, request: HttpRequest, queryset: QuerySet[FederationPartner], status: str, verb: str
    ) -> None:
        run_service_action(
            self, request, queryset,
            lambda actor, p: services.partner_update(
                actor=actor, organization_id=p.organization_id, partner_id=p.id,
                changes={"status": status},
            ),
            verb,
        )  # fmt: skip

    @admin.action(permissions=["write"], description="Suspend")
    def suspend(self, request: HttpRequest, queryset: QuerySet[FederationPartner]) -> None:
        self._set_status(request, queryset, PartnerStatus.SUSPENDED, "Suspended")

    @admin.action(permissions=["write"], description="Reactivate")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[FederationPartner]) -> None:
        self._set_status(request, queryset, PartnerStatus.ACTIVE, "Reactivated")
