"""Admin for federation partners: registered and changed through the services (so the metadata,
keys and DID are fetched and checked, and every change is audited), the keys' last fetch and
its result, and refetch, suspend and reactivate actions. Read with ``federation:read``
(auditors too), changed with ``federation:manage``."""

from django import forms
from django.contrib import admin
from django.contrib.postgres.forms import SimpleArrayField
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.formats import date_format
from django.utils.timezone import localtime

from agentidp.admin import (
    ConfirmedDelete,
    ManagedByScope,
    ServiceSaves,
    action_hidden_fields,
    admin_principal,
    confirmation_page,
    confirmed,
    organization_choice,
    run_service_action,
    scoped_to_principal,
)
from agentidp.errors import ValidationFailed
from agentidp.principals import Principal
from agentidp.words import plural
from federation import services
from federation.choices import PartnerStatus
from federation.models import FederationPartner
from federation.selectors import exchanged_tokens_live
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

    class Meta:
        model = FederationPartner
        fields = ["issuer", "jwks_uri", "did", "allowed_organizations", "allowed_scopes",
                  "read_only", "allow_delegation", "expires_at", "jwks_uri_other_host", "notes",
                  "status"]  # fmt: skip


def _registered(actor: Principal, form: forms.ModelForm[FederationPartner]) -> FederationPartner:
    data = form.cleaned_data
    chosen = data.get("for_organization")
    organization_id = chosen.id if actor.is_platform and chosen else actor.organization_id
    if organization_id is None:
        raise ValidationFailed(
            "Choose an organization.", errors={"for_organization": ["Required."]}
        )
    return services.partner_register(
        actor=actor, organization_id=organization_id,
        issuer=str(data.get("issuer") or ""), jwks_uri=str(data.get("jwks_uri") or ""),
        did=str(data.get("did") or ""),
        allowed_organizations=list(data.get("allowed_organizations") or []),
        allowed_scopes=list(data.get("allowed_scopes") or []), expires_at=data.get("expires_at"),
        notes=str(data.get("notes") or ""), read_only=bool(data.get("read_only")),
        jwks_uri_other_host=bool(data.get("jwks_uri_other_host")),
        allow_delegation=bool(data.get("allow_delegation")),
    )  # fmt: skip


def _changed(actor: Principal, form: forms.ModelForm[FederationPartner]) -> FederationPartner:
    partner = form.instance
    changes = {
        f: list(v) if isinstance(v, list | tuple) else v
        for f, v in form.cleaned_data.items()
        if f in form.changed_data and f in services.PARTNER_UPDATABLE
    }
    if not changes:
        return partner
    return services.partner_update(
        actor=actor, organization_id=partner.organization_id, partner_id=partner.id,
        changes=changes,
    )  # fmt: skip


READONLY = ("created_by", "created_at", "updated_at", "key_ids", "keys_fetched_at",
            "last_fetch_at", "last_fetch_result", "last_fetch_error")  # fmt: skip


@admin.register(FederationPartner)
class FederationPartnerAdmin(
    ServiceSaves[FederationPartner],
    ConfirmedDelete[FederationPartner],
    ManagedByScope[FederationPartner],
    admin.ModelAdmin[FederationPartner],
):
    """A partner issuer with what its keys' last fetch found (when, the result, the error); a
    registration fetches and checks its metadata, keys and DID before anything is stored."""

    admin_scope, write_scope = Scope.FEDERATION_READ, Scope.FEDERATION_MANAGE
    form = PartnerForm
    list_display = ["issuer", "organization", "current_status", "expires_at", "read_only",
                    "last_fetch"]  # fmt: skip
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

    @admin.display(description="keys' last fetch", ordering="last_fetch_at")
    def last_fetch(self, partner: FederationPartner) -> str:
        if partner.last_fetch_at is None:
            return "never"
        when = date_format(localtime(partner.last_fetch_at), "DATETIME_FORMAT")
        said = f"{partner.get_last_fetch_result_display()}, {when}"
        return f"{said}: {partner.last_fetch_error}" if partner.last_fetch_error else said

    @admin.display(description="keys (kid)")
    def key_ids(self, partner: FederationPartner) -> str:
        keys = partner.jwks.get("keys")
        return ", ".join(
            str(key.get("kid")) for key in (keys if isinstance(keys, list) else [])
            if isinstance(key, dict)
        )  # fmt: skip

    @admin.display(description="resources shared")
    def shared(self, partner: FederationPartner) -> str:
        """The organization's resources its agents may get tokens for (changed in the API:
        ``PUT /federation/partners/{id}/resources/{resource_id}``)."""
        shares = partner.shared_resources.select_related("resource").order_by("created_at")
        listed = [f"{share.resource.identifier} ({' '.join(share.scopes)})" for share in shares]
        return "; ".join(listed) or "none"

    def get_fields(
        self, request: HttpRequest, obj: FederationPartner | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            registration = ("issuer", "jwks_uri", "did", "allowed_organizations",
                            "allowed_scopes", "read_only", "allow_delegation", "expires_at",
                            "jwks_uri_other_host", "notes")  # fmt: skip
            platform = admin_principal(request).is_platform
            return (("for_organization",) if platform else ()) + registration
        return ("issuer", "jwks_uri", "did", "status", "allowed_organizations", "allowed_scopes",
                "read_only", "allow_delegation", "expires_at", "notes", "shared",
                *READONLY)  # fmt: skip

    def get_readonly_fields(
        self, request: HttpRequest, obj: FederationPartner | None = None
    ) -> tuple[str, ...]:
        return READONLY if obj is None else ("issuer", "jwks_uri", "did", "shared", *READONLY)

    def get_form(
        self, request: HttpRequest, obj: FederationPartner | None = None, change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[FederationPartner]]:  # fmt: skip
        form = super().get_form(request, obj, change, **kwargs)
        if "status" in form.base_fields:
            status = form.base_fields["status"]
            assert isinstance(status, forms.ChoiceField)  # noqa: S101 - a choices field
            status.choices = [
                (PartnerStatus.ACTIVE, "Active"),
                (PartnerStatus.SUSPENDED, "Suspended"),
            ]
        organization_choice(form, request, adding=obj is None)
        return form

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[FederationPartner], change: bool
    ) -> FederationPartner:
        """Registration fetches and checks the partner's metadata, keys and DID first."""
        actor = admin_principal(request)
        return _changed(actor, form) if change else _registered(actor, form)

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

    def _cut_off(self, partners: list[FederationPartner]) -> list[str]:
        return [
            f"{p.issuer}: its tokens are refused from now on, and the "
            f"{plural(exchanged_tokens_live(organization_id=p.organization_id, partner_id=p.id), 'local token')} "
            "exchanged for its tokens that may still be live stop working at their next use."
            for p in partners
        ]

    def delete_consequences(self, request: HttpRequest, obj: FederationPartner) -> list[str]:
        return [
            *self._cut_off([obj]),
            "Forgets its cached keys; trusting it again means registering it again.",
            "The audit log keeps its history (federation.partner_added, federation.partner_removed).",
        ]

    @admin.action(permissions=["write"], description="Suspend")
    def suspend(
        self, request: HttpRequest, queryset: QuerySet[FederationPartner]
    ) -> HttpResponse | None:
        partners = list(queryset)
        if not confirmed(request):
            return confirmation_page(
                request, title="Suspend the selected partners?",
                question="Stop trusting these partners until they are reactivated?",
                subjects=[p.issuer for p in partners], consequences=self._cut_off(partners),
                confirm_label="Yes, suspend", back_url=request.get_full_path(),
                back_label="Federation partners", hidden=action_hidden_fields(request),
            )  # fmt: skip
        self._set_status(request, queryset, PartnerStatus.SUSPENDED, "Suspended")
        return None

    @admin.action(permissions=["write"], description="Reactivate")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[FederationPartner]) -> None:
        self._set_status(request, queryset, PartnerStatus.ACTIVE, "Reactivated")
