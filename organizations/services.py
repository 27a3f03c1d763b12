"""Every write to organizations and staff membership."""

import uuid
from dataclasses import dataclass
from datetime import date
from typing import cast

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.models import User as DjangoUser
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.db.models import Model
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from agentidp.boundary import name_checked, slug_checked
from agentidp.errors import Conflict, Forbidden, JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.lifecycle import StaffAccessLost, staff_access_lost
from agentidp.principals import Principal
from agentidp.usage import redis_client, usage_key
from organizations.choices import PLAN_QUOTAS, DidKeyAlgorithm, MemberRole, OrganizationStatus, Plan
from organizations.models import Organization, StaffMembership, TokenUsage

STAFF_GROUP = "Organization staff"
STAFF_PERMISSIONS = (
    ("agents", "view_agent"),
    ("agents", "change_agent"),
    ("agents", "add_agent"),
    ("agents", "view_organizationmember"),
    ("agents", "add_organizationmember"),
    ("agents", "change_organizationmember"),
    ("compliance", "view_auditevent"),
    ("organizations", "view_organization"),
    ("organizations", "view_staffmembership"),
    ("organizations", "add_staffmembership"),
    ("organizations", "change_staffmembership"),
    ("organizations", "delete_staffmembership"),
    ("organizations", "change_organization"),
    ("credentials", "view_clientsecret"),
    ("credentials", "view_agentkey"),
    ("credentials", "add_agentkey"),
    ("credentials", "delete_agentkey"),
    ("webhooks", "view_webhooksubscription"),
    ("webhooks", "add_webhooksubscription"),
    ("webhooks", "change_webhooksubscription"),
    ("webhooks", "delete_webhooksubscription"),
    ("webhooks", "view_webhookdelivery"),
    ("federation", "view_federationpartner"),
    ("federation", "add_federationpartner"),
    ("federation", "change_federationpartner"),
    ("federation", "delete_federationpartner"),
    ("oidc", "view_resource"),
    ("oidc", "add_resource"),
    ("oidc", "change_resource"),
    ("oidc", "delete_resource"),
    ("oidc", "view_resourcegrant"),
    ("oidc", "add_resourcegrant"),
    ("oidc", "change_resourcegrant"),
    ("oidc", "delete_resourcegrant"),
)


def organization_get(*, organization_id: uuid.UUID, for_update: bool = False) -> Organization:
    """The organization if visible in the current context; deleted ones are gone."""
    organizations = Organization.objects.exclude(status=OrganizationStatus.DELETED)
    if for_update:
        organizations = organizations.select_for_update()
    organization = organizations.filter(id=organization_id).first()
    if organization is None:
        raise NotFound("No such organization.")
    return organization


def _quota(value: int | None, plan: str, index: int) -> int:
    return value if value is not None else PLAN_QUOTAS[plan][index]


@transaction.atomic
def organization_create(
    *,
    actor: Principal,
    slug: str,
    name: str,
    plan: str = Plan.FREE,
    max_agents: int | None = None,
    max_tokens_per_month: int | None = None,
) -> Organization:
    """Create a tenant with its plan's quotas unless given; runs in the platform context."""
    if plan not in Plan.values:
        raise ValidationFailed("Unknown plan.", errors={"plan": [f"Must be one of {Plan.values}."]})
    slug = slug_checked(slug)
    name = name_checked(name, field="name") if name else slug
    organization = Organization(
        slug=slug,
        name=name or slug,
        plan=plan,
        max_agents=_quota(max_agents, plan, 0),
        max_tokens_per_month=_quota(max_tokens_per_month, plan, 1),
    )
    try:
        with transaction.atomic():
            organization.save(force_insert=True)
    except IntegrityError as exc:
        raise Conflict(
            "An organization with this slug already exists.", errors={"slug": ["Already taken."]}
        ) from exc
    event_record(
        organization_id=organization.id,
        actor=actor,
        action="organization.created",
        subject_type="organization",
        subject_id=str(organization.id),
        data={"slug": slug, "plan": plan},
    )
    return organization


PLATFORM_FIELDS = ("plan", "max_agents", "max_tokens_per_month")
"""What only platform staff change: the commercial terms."""
SETTING_BOUNDS = {
    "access_token_lifetime_seconds": (60, 86400),
    "credential_grace_seconds": (0, 30 * 86400),
    "delegation_max_depth": (1, 10),
    "attestation_period_days": (7, 3650),
}
UPDATABLE_FIELDS = (
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
)


@transaction.atomic
def organization_update(
    *, actor: Principal, organization_id: uuid.UUID, changes: dict[str, JSONValue]
) -> Organization:
    """Change name, plan or quotas; a plan change without explicit quotas takes the plan's."""
    organization = organization_get(organization_id=organization_id, for_update=True)
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ValidationFailed(
            "These fields cannot be changed.", errors={f: ["Not updatable."] for f in unknown}
        )
    platform_only = sorted(set(changes) & set(PLATFORM_FIELDS))
    if platform_only and not actor.is_platform:
        raise Forbidden(
            "The plan and the quotas are changed by platform staff.",
            errors={f: ["Platform staff only."] for f in platform_only},
        )
    for field, (low, high) in SETTING_BOUNDS.items():
        value = changes.get(field)
        if value is not None and (not isinstance(value, int) or not low <= value <= high):
            raise ValidationFailed(
                "A setting is out of range.", errors={field: [f"From {low} to {high}."]}
            )
    plan = changes.get("plan")
    if plan is not None and plan not in Plan.values:
        raise ValidationFailed("Unknown plan.", errors={"plan": [f"Must be one of {Plan.values}."]})
    algorithm = changes.get("did_key_algorithm")
    if algorithm is not None and algorithm not in DidKeyAlgorithm.values:
        raise ValidationFailed(
            "Unknown DID key type.",
            errors={"did_key_algorithm": [f"One of {', '.join(DidKeyAlgorithm.values)}."]},
        )
    flag = changes.get("assertion_audience_token_endpoint")
    if flag is not None and not isinstance(flag, bool):
        raise ValidationFailed(
            "Not a boolean.", errors={"assertion_audience_token_endpoint": ["A boolean."]}
        )
    name = changes.get("name")
    if isinstance(name, str):
        changes["name"] = name_checked(name, field="name")
    if isinstance(plan, str) and plan != organization.plan:
        changes.setdefault("max_agents", PLAN_QUOTAS[plan][0])
        changes.setdefault("max_tokens_per_month", PLAN_QUOTAS[plan][1])
    changed = {k: v for k, v in changes.items() if getattr(organization, k) != v}
    for field, value in changed.items():
        setattr(organization, field, value)
    if changed:
        organization.save(update_fields=[*changed, "updated_at"])
        event_record(
            organization_id=organization.id,
            actor=actor,
            action="organization.updated",
            subject_type="organization",
            subject_id=str(organization.id),
            data={"changed": changed},
        )
    return organization


def _organization_set_status(
    *, actor: Principal, organization_id: uuid.UUID, status: str, action: str
) -> Organization:
    organization = organization_get(organization_id=organization_id, for_update=True)
    if organization.is_system:
        raise Conflict("The system organization cannot change status.")
    if organization.status == status:
        raise Conflict(f"The organization is already {status}.")
    organization.status = status
    organization.save(update_fields=["status", "updated_at"])
    event_record(
        organization_id=organization.id,
        actor=actor,
        action=action,
        subject_type="organization",
        subject_id=str(organization.id),
    )
    return organization


@transaction.atomic
def organization_suspend(*, actor: Principal, organization_id: uuid.UUID) -> Organization:
    """Suspend a tenant: its agents and staff can no longer act. Platform staff only: an
    organization's own owner would lock themselves out with it."""
    if not actor.is_platform:
        raise Forbidden("Only platform staff suspend an organization.")
    return _organization_set_status(
        actor=actor,
        organization_id=organization_id,
        status=OrganizationStatus.SUSPENDED,
        action="organization.suspended",
    )


@transaction.atomic
def organization_reactivate(*, actor: Principal, organization_id: uuid.UUID) -> Organization:
    """Lift a suspension (platform staff only, as suspending)."""
    if not actor.is_platform:
        raise Forbidden("Only platform staff reactivate an organization.")
    return _organization_set_status(
        actor=actor,
        organization_id=organization_id,
        status=OrganizationStatus.ACTIVE,
        action="organization.reactivated",
    )


@transaction.atomic
def organization_change(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    changes: dict[str, JSONValue],
    status: str | None = None,
) -> Organization:
    """One PATCH: field changes, then a status change (suspend or reactivate) if it differs;
    all or nothing."""
    organization = organization_get(organization_id=organization_id)
    if changes:
        organization = organization_update(
            actor=actor, organization_id=organization_id, changes=changes
        )
    if status is None or status == organization.status:
        return organization
    if status == OrganizationStatus.SUSPENDED:
        return organization_suspend(actor=actor, organization_id=organization_id)
    if status == OrganizationStatus.ACTIVE:
        return organization_reactivate(actor=actor, organization_id=organization_id)
    raise ValidationFailed("Unknown status.", errors={"status": ["Use active or suspended."]})


def _tenant_dependents() -> list[type[Model]]:
    """Tenant tables whose rows go with a deleted organization (not the audit chain)."""
    models: list[type[Model]] = []
    for relation in Organization._meta.get_fields(include_hidden=True):
        model = getattr(relation, "related_model", None)
        if (
            relation.auto_created
            and not relation.concrete
            and model is not None
            and model is not StaffMembership
            and not getattr(model, "retained_after_organization_deletion", False)
        ):
            models.append(model)
    return models


@transaction.atomic
def organization_delete(*, actor: Principal, organization_id: uuid.UUID) -> None:
    """Delete a tenant's operational data and tombstone its row.

    Refused while the organization has agents and is not suspended. The organization row and
    its audit chain are kept (status ``deleted``): audit records are append-only and must
    outlive the tenant.
    """
    organization = organization_get(organization_id=organization_id, for_update=True)
    if organization.is_system:
        raise Conflict("The system organization cannot be deleted.")
    agent_model = apps.get_model("agents", "Agent")
    has_agents = agent_model._default_manager.filter(organization_id=organization_id).exists()
    if has_agents and organization.status != OrganizationStatus.SUSPENDED:
        raise Conflict(
            "The organization still has agents; suspend it before deleting it.",
            errors={"status": ["Must be suspended to delete an organization with agents."]},
        )
    for model in _tenant_dependents():
        model._default_manager.filter(organization_id=organization_id).delete()
    StaffMembership.objects.filter(organization_id=organization_id).delete()
    organization.status = OrganizationStatus.DELETED
    organization.slug = f"deleted-{organization.id.hex}"
    organization.save(update_fields=["status", "slug", "updated_at"])
    event_record(
        organization_id=organization.id,
        actor=actor,
        action="organization.deleted",
        subject_type="organization",
        subject_id=str(organization.id),
    )


def staff_group(using: str = DEFAULT_DB_ALIAS) -> Group:
    """The group holding the admin permissions an organization's staff need (what each may do
    with them is still limited by the scopes of their role)."""
    group, _ = Group.objects.using(using).get_or_create(name=STAFF_GROUP)
    wanted = Permission.objects.using(using).none()
    for app_label, codename in STAFF_PERMISSIONS:
        wanted |= Permission.objects.using(using).filter(
            content_type__app_label=app_label, codename=codename
        )
    group.permissions.set(wanted)
    return group


def staff_group_refresh(sender: object, using: str = "owner", **kwargs: object) -> None:
    """``post_migrate`` receiver: an existing staff group gains the permissions of apps added
    since it was made (the permissions themselves exist only once their app has migrated)."""
    if using == "owner" and Group.objects.using(using).filter(name=STAFF_GROUP).exists():
        staff_group(using)


@transaction.atomic
def staff_create(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    username: str,
    password: str,
    role: str = MemberRole.ADMIN,
    email: str = "",
    superuser: bool = False,
) -> DjangoUser:
    """A Django staff login tied to one organization through its membership record."""
    organization = organization_get(organization_id=organization_id)
    if role not in MemberRole.values:
        raise ValidationFailed("Unknown role.", errors={"role": [f"One of {MemberRole.values}."]})
    if DjangoUser.objects.filter(username=username).exists():
        raise Conflict("A user with this username exists.", errors={"username": ["Taken."]})
    user = DjangoUser(username=username, email=email, is_staff=True, is_superuser=superuser)
    user.set_password(password)
    user.save()
    user.groups.add(staff_group())
    StaffMembership.objects.create(user=user, organization=organization, role=role)
    event_record(
        organization_id=organization.id,
        actor=actor,
        action="member.added",
        subject_type="staff",
        subject_id=str(user.pk),
        data={"username": username, "role": role, "superuser": superuser},
    )
    return user


def token_usage_persist(*, organization_id: uuid.UUID, month: date) -> TokenUsage:
    """Persist the Redis counter of ``month``; if Redis lost count, restore it from the table.

    The stored figure never goes down: it is the larger of the two counts.
    """
    client = redis_client()
    key = usage_key(organization_id, month)
    counted = int(cast(bytes | None, client.get(key)) or 0)
    usage = (
        TokenUsage.objects.select_for_update()
        .filter(organization_id=organization_id, month=month)
        .first()
    )
    if usage is None:
        usage = TokenUsage.objects.create(
            organization_id=organization_id, month=month, tokens_issued=counted
        )
    elif counted > usage.tokens_issued:
        usage.tokens_issued = counted
        usage.save(update_fields=["tokens_issued", "updated_at"])
    elif counted < usage.tokens_issued:
        client.incrby(key, usage.tokens_issued - counted)
        client.expire(key, 40 * 86400)
    return usage


# --- the organization's people -----------------------------------------------------------------

PASSWORD_SETUP_PATH = "/admin/password/set/{uid}/{token}/"  # noqa: S105 - a path


@dataclass(frozen=True)
class Invitation:
    """A new member, and where they set their password (shown once: it works until they use
    it or ``PASSWORD_RESET_TIMEOUT`` passes)."""

    membership: StaffMembership
    setup_path: str


def member_get(
    *, organization_id: uuid.UUID, membership_id: int, for_update: bool = False
) -> StaffMembership:
    """One of the organization's staff members (another organization's is the same 404)."""
    memberships = StaffMembership.objects.select_related("user").filter(
        organization_id=organization_id, id=membership_id
    )
    if for_update:
        memberships = memberships.select_for_update(of=("self",))
    found = memberships.first()
    if found is None:
        raise NotFound("No such member.")
    return found


def _owners(organization_id: uuid.UUID) -> int:
    return StaffMembership.objects.filter(
        organization_id=organization_id, role=MemberRole.OWNER, user__is_active=True
    ).count()


def _owners_only(actor: Principal, *roles: str) -> None:
    """Only an owner (or platform staff) makes someone an owner, or changes or removes one: an
    admin cannot take the organization over, nor lock its owners out."""
    if MemberRole.OWNER in roles and not (actor.is_platform or actor.role == MemberRole.OWNER):
        raise Forbidden(
            "Only an owner makes someone an owner, or changes or removes an owner.",
            errors={"role": ["Owners only."]},
        )


def _member_event(
    actor: Principal, membership: StaffMembership, action: str, data: dict[str, JSONValue]
) -> None:
    event_record(
        organization_id=membership.organization_id, actor=actor, action=action,
        subject_type="staff", subject_id=str(membership.user_id),
        data={"username": membership.user.get_username(), **data},
    )  # fmt: skip


@transaction.atomic
def member_invite(
    *, actor: Principal, organization_id: uuid.UUID, username: str, email: str, role: str
) -> Invitation:
    """A person joins the organization with ``role``: a new staff login with no usable
    password yet, and the one-time link where they set it. A username or e-mail address that
    is already someone's login is refused (a login belongs to one organization)."""
    organization = organization_get(organization_id=organization_id)
    if role not in MemberRole.values:
        raise ValidationFailed(
            "Unknown role.", errors={"role": [f"One of {', '.join(MemberRole.values)}."]}
        )
    _owners_only(actor, role)
    username = username.strip()
    email = email.strip()
    if (
        not username
        or len(username) > 150
        or not all(c.isalnum() or c in "@.+-_" for c in username)
    ):
        raise ValidationFailed(
            "The username is not acceptable.",
            errors={"username": ["Letters, digits and @ . + - _ only, at most 150."]},
        )
    if email:
        try:
            validate_email(email)
        except DjangoValidationError as exc:
            raise ValidationFailed(
                "Not an e-mail address.", errors={"email": ["Not an e-mail address."]}
            ) from exc
    taken = DjangoUser.objects.filter(username__iexact=username)
    if email:
        taken = taken | DjangoUser.objects.filter(email__iexact=email)
    if taken.exists():
        raise Conflict(
            "That username or e-mail address already has a login.",
            errors={"username": ["Already someone's login."]},
        )
    user = DjangoUser(username=username, email=email, is_staff=True)
    user.set_unusable_password()
    user.save()
    user.groups.add(staff_group())
    membership = StaffMembership.objects.create(user=user, organization=organization, role=role)
    _member_event(actor, membership, "member.added", {"role": role, "email": email or None})
    token = default_token_generator.make_token(user)
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return Invitation(
        membership=membership, setup_path=PASSWORD_SETUP_PATH.format(uid=uid, token=token)
    )


@transaction.atomic
def member_role_set(
    *, actor: Principal, organization_id: uuid.UUID, membership_id: int, role: str
) -> StaffMembership:
    """Change a member's role; the organization keeps at least one owner."""
    if role not in MemberRole.values:
        raise ValidationFailed(
            "Unknown role.", errors={"role": [f"One of {', '.join(MemberRole.values)}."]}
        )
    organization_get(organization_id=organization_id, for_update=True)  # serializes owner checks
    membership = member_get(
        organization_id=organization_id, membership_id=membership_id, for_update=True
    )
    previous = membership.role
    if previous == role:
        return membership
    _owners_only(actor, previous, role)
    if previous == MemberRole.OWNER and _owners(organization_id) <= 1:
        raise Conflict(
            "The last owner cannot be demoted: make someone else owner first.",
            errors={"role": ["The organization's only owner."]},
        )
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    _member_event(actor, membership, "member.role_changed", {"from": previous, "to": role})
    return membership


@transaction.atomic
def member_remove(*, actor: Principal, organization_id: uuid.UUID, membership_id: int) -> None:
    """Take a person out of the organization: their login is deactivated (it belongs to this
    organization only), their sessions end with it. Not the last owner."""
    organization_get(organization_id=organization_id, for_update=True)
    membership = member_get(
        organization_id=organization_id, membership_id=membership_id, for_update=True
    )
    _owners_only(actor, membership.role)
    if membership.role == MemberRole.OWNER and _owners(organization_id) <= 1:
        raise Conflict("The last owner cannot be removed: make someone else owner first.")
    if actor.kind == "user" and actor.id == str(membership.user_id):
        raise Conflict("You cannot remove yourself; another owner or admin can.")
    user = membership.user
    staff_access_lost(
        StaffAccessLost(
            organization_id=organization_id, user_id=user.pk, username=user.get_username(),
            reason="sponsor_removed",
        )
    )  # fmt: skip
    _member_event(actor, membership, "member.removed", {"role": membership.role})
    membership.delete()
    # a login of nobody's now: its deactivation announces nothing more (the removal did)
    user.is_active = False
    user.save(update_fields=["is_active"])


def login_deactivation_follow(
    sender: object,
    instance: DjangoUser,
    update_fields: frozenset[str] | None = None,
    **kwargs: object,
) -> None:
    """``pre_save`` receiver on the login model: a login of one of the organizations' people
    turning inactive, wherever that happens (removing them, or platform staff in Django's own
    user pages), is announced as lost access in the same transaction."""
    if instance.is_active or instance.pk is None:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    was_active = DjangoUser.objects.filter(pk=instance.pk, is_active=True).exists()
    membership = StaffMembership.objects.filter(user_id=instance.pk).first()
    if not was_active or membership is None:
        return
    staff_access_lost(
        StaffAccessLost(
            organization_id=membership.organization_id, user_id=instance.pk,
            username=instance.get_username(), reason="sponsor_deactivated",
        )
    )  # fmt: skip


def login_deletion_follow(sender: object, instance: DjangoUser, **kwargs: object) -> None:
    """``pre_delete`` receiver on the login model: deleting a person's login (platform staff
    in Django's user pages) is lost access too; their agents stop before the login goes."""
    membership = StaffMembership.objects.filter(user_id=instance.pk).first()
    if membership is None or not instance.is_active:
        return  # a deactivated login's agents stopped when it was deactivated
    staff_access_lost(
        StaffAccessLost(
            organization_id=membership.organization_id, user_id=instance.pk,
            username=instance.get_username(), reason="sponsor_deleted",
        )
    )  # fmt: skip
