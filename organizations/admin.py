"""Admin for organizations and their people: platform superusers manage every organization;
an organization's owners and admins change its own settings (token lifetime, the default grace
of a rotated secret, the DID key type) and its people; plan and quotas, suspension and
reactivation are platform staff's."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from agentidp.admin import (
    ManagedByScope,
    ServiceSaves,
    action_hidden_fields,
    admin_principal,
    confirmation_page,
    confirmed,
    run_service_action,
    scoped_to_principal,
    shown_once_page,
)
from agentidp.conf import agentidp_settings
from agentidp.errors import DomainError
from agentidp.words import plural
from agents.models import Agent
from oidc.selectors import live_tokens_count
from organizations import services
from organizations.choices import MemberRole, Scope
from organizations.models import Organization, StaffMembership

FIELDS = (
    "id",
    "slug",
    "name",
    "plan",
    "max_agents",
    "max_tokens_per_month",
    "access_token_lifetime_seconds",
    "credential_grace_seconds",
    "did_key_algorithm",
    "delegation_max_depth",
    "attestation_period_days",
    "assertion_audience_token_endpoint",
    "status",
    "people",
    "created_at",
    "updated_at",
)
CHANGE_ONLY = (
    "access_token_lifetime_seconds", "credential_grace_seconds", "did_key_algorithm",
    "delegation_max_depth", "attestation_period_days", "assertion_audience_token_endpoint",
)  # fmt: skip


@admin.register(Organization)
class OrganizationAdmin(
    ServiceSaves[Organization], ManagedByScope[Organization], admin.ModelAdmin[Organization]
):
    """Read by the organization's members (``agents:read``), its own settings changed by its
    owners and admins (``members:write``); created, re-planned and suspended by platform
    staff only."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.MEMBERS_WRITE
    list_display = ["slug", "name", "plan", "status", "max_agents", "max_tokens_per_month"]
    list_filter = ["status", "plan"]
    search_fields = ["slug", "name"]
    readonly_fields = ["id", "status", "people", "created_at", "updated_at"]
    fields = FIELDS
    actions = ["suspend", "reactivate"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        organizations = super().get_queryset(request).exclude(status="deleted")
        return scoped_to_principal(request, organizations, field="id")

    def has_platform_permission(self, request: HttpRequest) -> bool:
        """What suspension and reactivation need (``permissions=["platform"]``): an owner who
        suspended their own organization would lock everyone in it out."""
        return admin_principal(request).is_platform

    def get_fields(self, request: HttpRequest, obj: Organization | None = None) -> tuple[str, ...]:
        """Token lifetime and secret grace start at their defaults; they are edited afterwards."""
        if obj is None:
            return tuple(f for f in FIELDS if f not in CHANGE_ONLY and f != "people")
        return FIELDS

    def get_readonly_fields(
        self, request: HttpRequest, obj: Organization | None = None
    ) -> list[str]:
        fields = list(self.readonly_fields)
        if obj is not None:
            fields.append("slug")
        if not admin_principal(request).is_platform:
            fields += list(services.PLATFORM_FIELDS)
        return fields

    @admin.display(description="people")
    def people(self, obj: Organization) -> str:
        count = StaffMembership.objects.filter(organization_id=obj.id).count()
        return plural(count, "person", "people")

    def get_form(
        self,
        request: HttpRequest,
        obj: Organization | None = None,
        change: bool = False,
        **kwargs: object,
    ) -> type[forms.ModelForm[Organization]]:
        form = super().get_form(request, obj, change, **kwargs)
        for name in ("max_agents", "max_tokens_per_month"):
            if name in form.base_fields:
                form.base_fields[name].required = False
                form.base_fields[name].help_text = "Leave empty for the plan's default."
        cap = int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"])
        hints = {
            "access_token_lifetime_seconds": f"Seconds, 60 to 86400; tokens never outlive the "
            f"deployment's cap ({cap} s).",
            "credential_grace_seconds": "Seconds a rotated secret keeps working by default, 0 "
            "to 2592000 (30 days).",
        }
        for name, hint in hints.items():
            if name in form.base_fields:
                form.base_fields[name].help_text = hint
        for name, (low, high) in services.SETTING_BOUNDS.items():
            field = form.base_fields.get(name)
            if isinstance(field, forms.IntegerField):
                # the service's bounds, as form errors on the field (not a refusal afterwards)
                field.validators = [
                    *field.validators,
                    MinValueValidator(low),
                    MaxValueValidator(high),
                ]
                field.widget.attrs.update(min=str(low), max=str(high))
        return form

    def has_add_permission(self, request: HttpRequest) -> bool:
        return admin_principal(request).is_platform

    def has_delete_permission(self, request: HttpRequest, obj: Organization | None = None) -> bool:
        return False

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[Organization], change: bool
    ) -> Organization:
        principal = admin_principal(request)
        data = form.cleaned_data
        if change:
            changes = {
                name: data[name]
                for name in services.UPDATABLE_FIELDS
                if name in form.changed_data and data.get(name) is not None
            }
            return services.organization_update(
                actor=principal, organization_id=form.instance.id, changes=changes
            )
        return services.organization_create(
            actor=principal, slug=data["slug"], name=data["name"], plan=data["plan"],
            max_agents=data.get("max_agents"),
            max_tokens_per_month=data.get("max_tokens_per_month"),
        )  # fmt: skip

    @admin.action(permissions=["platform"], description="Suspend selected organizations")
    def suspend(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> HttpResponse | None:
        organizations = list(queryset)
        if not confirmed(request):
            consequences: list[str] = []
            for organization in organizations:
                agents = (
                    Agent.objects.filter(organization_id=organization.id)
                    .exclude(status="decommissioned")
                    .count()
                )
                tokens = live_tokens_count(organization_id=organization.id)
                people = StaffMembership.objects.filter(organization_id=organization.id).count()
                consequences.append(
                    f"{organization.name}: its {plural(agents, 'agent')} get no tokens, its "
                    f"{plural(tokens, 'live token')} are refused and its "
                    f"{plural(people, 'person', 'people')} can act on nothing until it is reactivated."
                )
            return confirmation_page(
                request, title="Suspend the selected organizations?",
                question="Suspend these organizations?",
                subjects=[o.name for o in organizations], consequences=consequences,
                confirm_label="Yes, suspend", back_url=request.get_full_path(),
                back_label="Organizations", hidden=action_hidden_fields(request),
            )  # fmt: skip
        run_service_action(
            self, request, organizations,
            lambda actor, org: services.organization_suspend(actor=actor, organization_id=org.id),
            "Suspended",
        )  # fmt: skip
        return None

    @admin.action(permissions=["platform"], description="Reactivate selected organizations")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda actor, org: services.organization_reactivate(
                actor=actor, organization_id=org.id
            ),
            "Reactivated",
        )


# --- people ------------------------------------------------------------------------------------


class InviteForm(forms.Form):
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(), required=False,
        help_text="Platform staff: the organization they join.",
    )  # fmt: skip
    username = forms.CharField(max_length=150, help_text="Their login name.")
    email = forms.EmailField(required=False, help_text="Optional.")
    role = forms.ChoiceField(
        choices=MemberRole.choices,
        initial=MemberRole.MEMBER,
        help_text="Owner and admin manage the organization (only an owner makes owners); "
        "member reads its agents and people; auditor reads everything and changes nothing.",
    )

    def __init__(self, *args: object, platform: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if platform:
            field = self.fields["organization"]
            assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 - declared above
            field.queryset = Organization.objects.exclude(status="deleted").order_by("slug")
            field.required = True
        else:
            del self.fields["organization"]


class RoleForm(forms.ModelForm[StaffMembership]):
    class Meta:
        model = StaffMembership
        fields = ["role"]


@admin.register(StaffMembership)
class StaffMembershipAdmin(
    ServiceSaves[StaffMembership],
    ManagedByScope[StaffMembership],
    admin.ModelAdmin[StaffMembership],
):
    """The organization's people ("People" in the admin): read by every member whose role reads
    the organization, managed by owners and admins (``members:write``). A new person gets a
    one-time link to set their password; the last owner is never removed or demoted."""

    admin_scope, write_scope = Scope.AGENTS_READ, Scope.MEMBERS_WRITE
    list_display = [
        "username",
        "email",
        "role",
        "active",
        "last_login",
        "created_at",
        "organization",
    ]
    list_filter = ["organization", "role"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "organization"]
    form = RoleForm
    change_form_template = "admin/organizations/staffmembership/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[StaffMembership]:
        return scoped_to_principal(request, super().get_queryset(request))

    def get_fields(
        self, request: HttpRequest, obj: StaffMembership | None = None
    ) -> tuple[str, ...]:
        return ("username", "email", "role", "active", "last_login", "created_at")

    def get_readonly_fields(
        self, request: HttpRequest, obj: StaffMembership | None = None
    ) -> tuple[str, ...]:
        return ("username", "email", "active", "last_login", "created_at")

    @admin.display(description="username", ordering="user__username")
    def username(self, obj: StaffMembership) -> str:
        return str(obj.user.get_username())

    @admin.display(description="e-mail")
    def email(self, obj: StaffMembership) -> str:
        return str(obj.user.email or "—")

    @admin.display(description="active", boolean=True)
    def active(self, obj: StaffMembership) -> bool:
        return bool(obj.user.is_active)

    @admin.display(description="last login")
    def last_login(self, obj: StaffMembership) -> str:
        moment = obj.user.last_login
        return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"

    def has_delete_permission(
        self, request: HttpRequest, obj: StaffMembership | None = None
    ) -> bool:
        return False  # removal is its own confirmed page (remove_view)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:membership_id>/remove/", wrap(self.remove_view), name="organizations_staffmembership_remove"),
            *super().get_urls(),
        ]  # fmt: skip

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict[str, object] | None = None,
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise Http404("No such page.")
        principal = admin_principal(request)
        form = InviteForm(
            request.POST if request.method == "POST" else None, platform=principal.is_platform
        )
        if request.method == "POST" and form.is_valid():
            chosen = form.cleaned_data.get("organization")
            organization_id = chosen.id if chosen is not None else principal.organization_id
            if organization_id is None:
                form.add_error(None, "Choose an organization.")
            else:
                try:
                    invited = services.member_invite(
                        actor=principal, organization_id=organization_id,
                        username=form.cleaned_data["username"],
                        email=form.cleaned_data["email"] or "", role=form.cleaned_data["role"],
                    )  # fmt: skip
                except DomainError as exc:
                    form.add_error(None, exc.detail)
                    for field, errors in exc.errors.items():
                        if field in form.fields:
                            form.add_error(field, errors)
                else:
                    link = f"{agentidp_settings().issuer}{invited.setup_path}"
                    return shown_once_page(
                        request, title=f"{invited.membership.user.get_username()} was added",
                        note="Give them this link: it lets them choose their password once "
                        "(within three days), then log in to the admin as "
                        f"{invited.membership.get_role_display().lower()}.",
                        rows=[("password link", link)],
                        back_url=reverse("admin:organizations_staffmembership_changelist"),
                        back_label="Back to people",
                    )  # fmt: skip
        return TemplateResponse(
            request, "admin/organizations/staffmembership/invite.html",
            {**self.admin_site.each_context(request), "title": "Add a person", "form": form,
             "opts": self.model._meta},
        )  # fmt: skip

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[StaffMembership], change: bool
    ) -> StaffMembership:
        membership = form.instance
        return services.member_role_set(
            actor=admin_principal(request), organization_id=membership.organization_id,
            membership_id=membership.pk, role=form.cleaned_data["role"],
        )  # fmt: skip

    def remove_view(self, request: HttpRequest, membership_id: int) -> HttpResponse:
        membership = self.get_queryset(request).filter(id=membership_id).first()
        if membership is None or not self.has_write_permission(request):
            raise Http404("No such person.")
        back = reverse("admin:organizations_staffmembership_change", args=[membership.pk])
        name = membership.user.get_username()
        if confirmed(request):
            try:
                services.member_remove(
                    actor=admin_principal(request), organization_id=membership.organization_id,
                    membership_id=membership.pk,
                )  # fmt: skip
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
                return HttpResponseRedirect(back)
            self.message_user(request, f"Removed {name} from the organization.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:organizations_staffmembership_changelist"))
        return confirmation_page(
            request, title=f"Remove {name}?", question=f"Remove {name} from the organization?",
            consequences=[
                f"{name} ({membership.get_role_display().lower()}) can no longer log in: their "
                "login is deactivated, and their open sessions stop working.",
                "What they did stays in the audit log, under their name.",
                "Every active agent they sponsor is suspended at once, with its tokens:"
                " reassign those agents' sponsorship first to keep them running.",
            ],
            confirm_label="Yes, remove", back_url=back, back_label=name,
        )  # fmt: skip
