"""The admin site's branding and contents, and helpers shared by the app admins: the acting
principal and service-backed actions."""

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from agentidp.errors import DomainError
from agentidp.principals import Principal
from organizations.choices import scopes_implied
from organizations.models import Organization

if TYPE_CHECKING:  # the stubs' names for what a list page's columns and filters may be
    from django.contrib.admin.options import _ListDisplayT, _ListFilterT
    from django.utils.datastructures import _ListOrTuple

M = TypeVar("M", bound=Model)


def admin_principal(request: HttpRequest) -> Principal:
    """The principal the tenancy middleware resolved for this admin session."""
    principal = getattr(request, "principal", None)
    if not isinstance(principal, Principal):
        raise PermissionError("admin request without a principal")
    return principal


Q = TypeVar("Q", bound=Model)


def scoped_to_principal(
    request: HttpRequest, queryset: QuerySet[Q], field: str = "organization_id"
) -> QuerySet[Q]:
    """Platform staff see every organization's rows; others only their organization's (RLS
    enforces the same; this is the second lock); staff without one see nothing."""
    principal = admin_principal(request)
    if principal.is_platform:
        return queryset
    if principal.organization_id is None:
        return queryset.none()
    return queryset.filter(**{field: principal.organization_id})


def run_service_action(
    modeladmin: admin.ModelAdmin[M],
    request: HttpRequest,
    objects: Iterable[M],
    call: Callable[[Principal, M], object],
    verb: str,
) -> None:
    """Apply a service to each selected object, reporting refusals instead of failing."""
    principal = admin_principal(request)
    done = 0
    for obj in objects:
        try:
            call(principal, obj)
            done += 1
        except DomainError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb} {done} object(s).", messages.SUCCESS)
    return


class ManagedByScope(Generic[M]):
    """An admin seen by a principal holding ``admin_scope`` and changed (add, change, delete,
    actions) by one holding ``write_scope`` (``admin_scope`` when empty): platform staff, and the
    organization's members whose role grants it, as in the API (a scope implies what it implies
    there: ``webhooks:manage`` includes ``webhooks:read``). A role without the write scope reads
    the pages (an auditor reads every one) and is offered no button that changes anything."""

    admin_scope: str = ""
    write_scope: str = ""
    # No "view on site": this deployment's pages for a row are the admin's own (django-oauth-
    # toolkit's models point theirs at views this deployment does not serve).
    view_on_site: Callable[[M], str | None] | bool = False

    def _holds(self, request: HttpRequest, scope: str) -> bool:
        principal = getattr(request, "principal", None)  # none before login
        return isinstance(principal, Principal) and (
            principal.is_platform or scope in scopes_implied(principal.scopes)
        )

    def _manages(self, request: HttpRequest) -> bool:
        return self._holds(request, self.admin_scope)

    def has_write_permission(self, request: HttpRequest) -> bool:
        """What every action declares (``permissions=["write"]``), and what adding, changing
        and deleting need: a reader is offered none of them."""
        return self._holds(request, self.write_scope or self.admin_scope)

    # The role's scopes decide, not Django's per-model permissions: one rule, the API's, so a
    # page the admin links to is never one the role is refused.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._manages(request)

    def has_view_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return self._manages(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_write_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return self.has_write_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return self.has_write_permission(request)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, object] | None = None,
    ) -> HttpResponse:
        """The page's own buttons (``writer`` in its template) for a role that may use them."""
        context = {**(extra_context or {}), "writer": self.has_write_permission(request)}
        response: HttpResponse = super().change_view(request, object_id, form_url, context)  # type: ignore[misc]
        return response

    # An organization's own staff see one organization: its column and filter would be a word
    # repeated down every row of a page already narrow at 1366 pixels.
    def get_list_display(self, request: HttpRequest) -> "_ListDisplayT[M]":
        shown: _ListDisplayT[M] = super().get_list_display(request)  # type: ignore[misc]
        return shown if self._platform(request) else [n for n in shown if n != "organization"]

    def get_list_filter(self, request: HttpRequest) -> "_ListOrTuple[_ListFilterT]":
        shown: _ListOrTuple[_ListFilterT] = super().get_list_filter(request)  # type: ignore[misc]
        return shown if self._platform(request) else [n for n in shown if n != "organization"]

    def _platform(self, request: HttpRequest) -> bool:
        principal = getattr(request, "principal", None)
        return isinstance(principal, Principal) and principal.is_platform


class PlatformOnly(Generic[M]):
    """An admin of deployment-wide rows, seen by platform staff only and changed by no one
    through its forms (actions go through services)."""

    view_on_site: Callable[[M], str | None] | bool = False

    def _platform(self, request: HttpRequest) -> bool:
        principal = getattr(request, "principal", None)  # none on the login page
        return isinstance(principal, Principal) and principal.is_platform

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._platform(request)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self._platform(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- confirmation pages --------------------------------------------------------------------


def confirmed(request: HttpRequest) -> bool:
    """Whether this POST is the answer to a confirmation page."""
    return request.method == "POST" and request.POST.get("confirmed") == "yes"


def confirmation_page(
    request: HttpRequest,
    *,
    title: str,
    question: str,
    consequences: Sequence[str],
    confirm_label: str,
    back_url: str,
    back_label: str = "",
    subjects: Sequence[str] = (),
    hidden: Sequence[tuple[str, str]] = (),
    form: forms.Form | None = None,
    danger: bool = True,
) -> TemplateResponse:
    """The page every destructive admin action goes through first: what it applies to, what
    will happen in numbers, and a button that posts the same request again, confirmed."""
    return TemplateResponse(
        request,
        "admin/agentidp/confirm.html",
        {
            **admin.site.each_context(request), "title": title, "question": question,
            "consequences": list(consequences), "confirm_label": confirm_label,
            "back_url": back_url, "back_label": back_label, "subjects": list(subjects),
            "hidden": list(hidden), "form": form, "danger": danger,
        },
    )  # fmt: skip


def action_hidden_fields(request: HttpRequest) -> list[tuple[str, str]]:
    """A changelist action's own POST fields, to post it again once confirmed."""
    fields = [("action", request.POST.get("action", ""))]
    fields += [("_selected_action", pk) for pk in request.POST.getlist("_selected_action")]
    if request.POST.get("select_across"):
        fields.append(("select_across", request.POST["select_across"]))
    return fields


def shown_once_page(
    request: HttpRequest,
    *,
    title: str,
    note: str,
    rows: Sequence[tuple[str, str]],
    back_url: str,
    back_label: str = "Done",
) -> TemplateResponse:
    """A secret (or a one-time link) in this response only, with copy buttons: never in a
    message (which the session would store), a log or a later page; never cached."""
    response = TemplateResponse(
        request,
        "admin/agentidp/shown_once.html",
        {
            **admin.site.each_context(request), "title": title, "note": note,
            "rows": list(rows), "back_url": back_url, "back_label": back_label,
        },
    )  # fmt: skip
    response["Cache-Control"] = "no-store"
    return response


ORGANIZATION_CHOICE = "for_organization"


def organization_choice(
    form: type[forms.ModelForm[M]], request: HttpRequest, *, adding: bool
) -> None:
    """The organization a new row belongs to: a required choice of every organization for
    platform staff adding one; nobody else sees the field (theirs is their own). The field is
    replaced by a copy: a form's declared fields are shared by every form class the admin
    makes from it, so changing one in place would carry one request's choice to the next."""
    if ORGANIZATION_CHOICE not in form.base_fields:
        return
    if not (adding and admin_principal(request).is_platform):
        del form.base_fields[ORGANIZATION_CHOICE]
        return
    field = copy.deepcopy(form.base_fields[ORGANIZATION_CHOICE])
    assert isinstance(field, forms.ModelChoiceField)  # noqa: S101 - declared as one
    field.queryset = Organization.objects.exclude(status="deleted").order_by("slug")
    field.required = True
    form.base_fields[ORGANIZATION_CHOICE] = field


class ServiceSaves(Generic[M]):
    """An admin whose add and change forms save through a service while they validate, so a
    refusal (a name taken, a quota reached, a rule of the service) is an error on the form,
    shown with what was typed, never a 500 or a half-applied change: the admin's view runs in
    one transaction, and the service's own savepoint is rolled back with its refusal."""

    def service_save(
        self, request: HttpRequest, form: forms.ModelForm[M], change: bool
    ) -> M:  # pragma: no cover - each admin's own
        raise NotImplementedError

    def get_form(
        self, request: HttpRequest, obj: M | None = None, change: bool = False, **kwargs: object
    ) -> type[forms.ModelForm[M]]:
        base: type[forms.ModelForm[M]] = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        save = self.service_save

        def _post_clean(form: forms.ModelForm[M]) -> None:
            base._post_clean(form)  # type: ignore[attr-defined]
            if form.errors:
                return
            try:
                saved = save(request, form, not form.instance._state.adding)
            except DomainError as exc:
                form.add_error(None, exc.detail)
                for field, problems in exc.errors.items():
                    if field in form.fields:
                        form.add_error(field, problems)
                return
            form.service_saved = saved  # type: ignore[attr-defined]

        return type(base.__name__, (base,), {"_post_clean": _post_clean})

    def save_model(
        self, request: HttpRequest, obj: M, form: forms.ModelForm[M], change: bool
    ) -> None:
        """The service saved it while the form validated: the admin's object becomes that row."""
        saved: M = form.service_saved  # type: ignore[attr-defined]
        obj.pk, obj._state.adding = saved.pk, False
        obj.refresh_from_db()

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm[M], formsets: object, change: bool
    ) -> None:
        return  # the service wrote everything there is


class ConfirmedDelete(Generic[M]):
    """Deleting one object through the admin's own confirmation page, which says what the
    deletion does in numbers (:meth:`delete_consequences`), then through ``delete_model`` (the
    service); a refusal is a message, never a 500. (The site offers no bulk "delete selected":
    each deletion is looked at.)"""

    def delete_consequences(self, request: HttpRequest, obj: M) -> list[str]:
        raise NotImplementedError

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        modeladmin = cast("admin.ModelAdmin[M]", self)
        obj = modeladmin.get_object(request, unquote(object_id))
        if obj is None or not modeladmin.has_delete_permission(request, obj):
            raise Http404("No such object.")
        opts = modeladmin.model._meta
        page = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        if confirmed(request):
            try:
                modeladmin.delete_model(request, obj)
            except DomainError as exc:
                modeladmin.message_user(request, exc.detail, messages.ERROR)
                return HttpResponseRedirect(page)
            modeladmin.message_user(request, f"Deleted {obj}.", messages.SUCCESS)
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            )
        return confirmation_page(
            request, title=f"Delete {obj}?", question=f"Delete {opts.verbose_name} {obj}?",
            consequences=self.delete_consequences(request, obj),
            confirm_label="Yes, delete", back_url=page, back_label=str(obj),
        )  # fmt: skip


# --- the site --------------------------------------------------------------------------------

# This server issues client_credentials tokens only: no authorization codes (grants), id tokens
# or refresh tokens; beat schedules are intervals and crontabs; staff permissions come from
# roles, not hand-made groups.
MEANINGLESS_HERE = (
    "oauth2_provider.Grant",
    "oidc.IDToken",
    "oidc.RefreshToken",
    "auth.Group",
    "django_celery_beat.SolarSchedule",
    "django_celery_beat.ClockedSchedule",
)


def admin_site_configure() -> None:
    """Brand the admin and keep only the models that mean something here. Called from
    ``AgentIdPConfig.ready()``, after every app's admin module has registered its models."""
    admin.site.site_header = "AgentIdP administration"
    admin.site.site_title = "AgentIdP"
    admin.site.index_title = "Organizations, agents, credentials and audit"
    admin.site.site_url = "/"  # "view site": the landing page (admin, API docs, health, metrics)
    # Deleting goes through each admin's own page, which says what goes with the row; a bulk
    # delete would skip the services and their audit records.
    admin.site.disable_action("delete_selected")
    for label in MEANINGLESS_HERE:
        model = apps.get_model(label)
        if admin.site.is_registered(model):
            admin.site.unregister(model)
