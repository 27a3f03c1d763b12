"""The resource registry: an organization's own APIs and MCP servers, their scopes, who may be
issued which, and what a token request naming one (RFC 8707 ``resource``) may get.

A registered identifier is unique across the deployment, and none lives under this
deployment's own origin: a token for a resource never names the platform API as its audience,
and the platform API never accepts one (it checks ``aud``).
"""

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet

from agentidp.boundary import text_refusal
from agentidp.conf import agentidp_settings
from agentidp.errors import Conflict, JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from agents.models import Agent, OrganizationMember
from credentials.choices import SigningAlgorithm
from credentials.models import Client
from oidc.dpop import DPOP_ALGORITHMS
from oidc.models import Resource, ResourceGrant
from oidc.services import client_refusal_record
from oidc.tokens import Target, api_audience
from organizations.choices import MemberRole, OrganizationStatus
from organizations.models import Organization

MAX_RESOURCES = 200
MAX_SCOPES = 50
MAX_SCOPE_NAME = 100
MAX_DESCRIPTION = 500
MAX_LIFETIME = 86400
# RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
UPDATABLE = (
    "name", "scopes", "access_token_lifetime", "signing_algorithm", "dpop_required",
    "metadata_hosted",
)  # fmt: skip

CREATED_EVENT = "resource.created"
UPDATED_EVENT = "resource.updated"
DELETED_EVENT = "resource.deleted"
GRANT_EVENT = "resource.grant_changed"


def _refused(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={field: [message]})


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def identifier_checked(value: object) -> str:
    """A resource indicator (RFC 8707 2): an absolute https URI without a fragment (http on a
    loopback host where the deployment allows it, for development), outside this deployment's
    own origin."""
    if not isinstance(value, str) or not value:
        raise _refused("identifier", "The identifier is required.")
    if len(value) > 2048 or text_refusal(value) or any(c.isspace() for c in value):
        raise _refused("identifier", "The identifier must be a URI of at most 2048 characters.")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise _refused("identifier", "The identifier must be an absolute URI.") from exc
    if "#" in value or not host or parts.username is not None or parts.password is not None:
        raise _refused(
            "identifier", "The identifier must be an absolute URI with a host and no fragment."
        )
    if parts.scheme != "https":
        loopback_http = bool(settings.AGENTIDP["RESOURCE_ALLOW_LOOPBACK_HTTP"])
        if not (parts.scheme == "http" and loopback_http and _loopback(host)):
            raise _refused(
                "identifier",
                "The identifier must be an https URI (http only on a loopback host, where the "
                "deployment allows it for development).",
            )
    own = urlsplit(agentidp_settings().issuer)
    if (parts.scheme, host, port or _default_port(parts.scheme)) == (
        own.scheme, own.hostname, own.port or _default_port(own.scheme),
    ):  # fmt: skip
        raise _refused(
            "identifier", "The identifier is on this deployment's own origin, which it reserves."
        )
    return value


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _name_checked(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or text_refusal(value):
        raise _refused("name", "A name of 1 to 200 characters is required.")
    return value.strip()


def scopes_checked(value: object) -> list[dict[str, JSONValue]]:
    """A resource's scopes: ``[{"name", "description"}]``, names RFC 6749 scope tokens, unique.
    They mean what the resource says: a name the platform API also uses (a partner deployment
    registered as a resource defines ``agents:read``) opens nothing here, since the platform API
    takes only tokens whose audience is its own."""
    if not isinstance(value, list) or len(value) > MAX_SCOPES:
        raise _refused("scopes", f"An array of at most {MAX_SCOPES} scopes.")
    checked: list[dict[str, JSONValue]] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) - {"name", "description"}:
            raise _refused("scopes", f"Scope {index}: an object with a name and a description.")
        name, description = item.get("name"), item.get("description", "")
        if (
            not isinstance(name, str)
            or len(name) > MAX_SCOPE_NAME
            or not _SCOPE_TOKEN.fullmatch(name)
        ):
            raise _refused(
                "scopes",
                f"Scope {index}: a name of 1 to {MAX_SCOPE_NAME} characters without spaces, "
                "quotes or backslashes (RFC 6749 3.3).",
            )
        if name in seen:
            raise _refused("scopes", f"Scope {name}: listed twice.")
        if (
            not isinstance(description, str)
            or len(description) > MAX_DESCRIPTION
            or text_refusal(description)
        ):
            raise _refused(
                "scopes", f"Scope {name}: a description of at most {MAX_DESCRIPTION} characters."
            )
        seen.add(name)
        checked.append({"name": name, "description": description})
    return checked


def _lifetime_checked(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 60 <= value <= MAX_LIFETIME:
        raise _refused("access_token_lifetime", f"Seconds from 60 to {MAX_LIFETIME}, or null.")
    return value


def _algorithm_checked(value: object) -> str:
    if value not in SigningAlgorithm.values:
        raise _refused("signing_algorithm", f"One of {', '.join(SigningAlgorithm.values)}.")
    return str(value)


def _flag_checked(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _refused(field, "A boolean.")
    return value


def _data(resource: Resource) -> dict[str, JSONValue]:
    return {
        "identifier": resource.identifier,
        "name": resource.name,
        "scopes": list[JSONValue](resource.scope_names),
        "access_token_lifetime": resource.access_token_lifetime,
        "signing_algorithm": resource.signing_algorithm,
        "dpop_required": resource.dpop_required,
        "metadata_hosted": resource.metadata_hosted,
    }


# --- reads -----------------------------------------------------------------------------------


def resource_list(*, organization_id: uuid.UUID) -> QuerySet[Resource]:
    return Resource.objects.filter(organization_id=organization_id).order_by("identifier")


def resource_get(
    *, organization_id: uuid.UUID, resource_id: uuid.UUID, for_update: bool = False
) -> Resource:
    """The organization's resource; another organization's is the same 404."""
    resources = Resource.objects.filter(organization_id=organization_id, id=resource_id)
    if for_update:
        resources = resources.select_for_update()
    resource = resources.first()
    if resource is None:
        raise NotFound("No such resource.")
    return resource


def hosted_metadata_url(resource: Resource) -> str:
    return f"{agentidp_settings().issuer}/resources/{resource.id}/oauth-protected-resource"


def hosted_metadata(resource: Resource) -> dict[str, JSONValue]:
    """The RFC 9728 document of a registered resource: this deployment its authorization
    server, its own scopes, bearer tokens in the header, and whether DPoP is required."""
    return {
        "resource": resource.identifier,
        "authorization_servers": [agentidp_settings().issuer],
        "scopes_supported": list[JSONValue](resource.scope_names),
        "bearer_methods_supported": ["header"],
        "resource_name": resource.name,
        "dpop_signing_alg_values_supported": list[JSONValue](DPOP_ALGORITHMS),
        "dpop_bound_access_tokens_required": resource.dpop_required,
    }


def resource_hosted(resource_id: uuid.UUID) -> Resource | None:
    """A resource whose RFC 9728 metadata this deployment serves publicly, or None (no such
    resource, not hosted, or its organization not active). ``oidc_resource_hosted`` (SECURITY
    DEFINER) reveals only which organization a hosted resource belongs to; the resource is
    then read in that organization, under RLS."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT oidc_resource_hosted(%s::uuid)", [str(resource_id)])
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    organization_id: uuid.UUID = row[0]
    with tenant_context(organization_id):
        active = Organization.objects.filter(
            id=organization_id, status=OrganizationStatus.ACTIVE
        ).exists()
        found = Resource.objects.filter(
            organization_id=organization_id, id=resource_id, metadata_hosted=True
        ).first()
    return found if active else None


def grant_list(*, organization_id: uuid.UUID, resource_id: uuid.UUID) -> QuerySet[ResourceGrant]:
    resource_get(organization_id=organization_id, resource_id=resource_id)
    return ResourceGrant.objects.filter(
        organization_id=organization_id, resource_id=resource_id
    ).order_by("role", "agent_id")


# --- writes ----------------------------------------------------------------------------------


def _taken() -> Conflict:
    return Conflict(
        "A resource with this identifier is registered already.",
        errors={"identifier": ["Registered already (identifiers are unique on the deployment)."]},
    )


@transaction.atomic
def resource_create(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    identifier: str,
    name: str,
    scopes: Sequence[Mapping[str, JSONValue]] = (),
    access_token_lifetime: int | None = None,
    signing_algorithm: str = SigningAlgorithm.ES256,
    dpop_required: bool = False,
    metadata_hosted: bool = False,
) -> Resource:
    """Register a resource server of the organization's."""
    if Resource.objects.filter(organization_id=organization_id).count() >= MAX_RESOURCES:
        raise Conflict(
            f"The organization has {MAX_RESOURCES} resources; delete one first.",
            errors={"identifier": [f"At most {MAX_RESOURCES} resources per organization."]},
        )
    resource = Resource(
        organization_id=organization_id,
        identifier=identifier_checked(identifier),
        name=_name_checked(name),
        scopes=scopes_checked(list(scopes)),
        access_token_lifetime=_lifetime_checked(access_token_lifetime),
        signing_algorithm=_algorithm_checked(signing_algorithm),
        dpop_required=_flag_checked(dpop_required, "dpop_required"),
        metadata_hosted=_flag_checked(metadata_hosted, "metadata_hosted"),
        created_by=actor.id[:200],
    )
    try:
        with transaction.atomic():
            resource.save(force_insert=True)
    except IntegrityError as exc:
        raise _taken() from exc
    event_record(
        organization_id=organization_id, actor=actor, action=CREATED_EVENT,
        subject_type="resource", subject_id=str(resource.id), data=_data(resource),
    )  # fmt: skip
    return resource


@transaction.atomic
def resource_update(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    resource_id: uuid.UUID,
    changes: Mapping[str, JSONValue],
) -> Resource:
    """Change a resource (its identifier stays: tokens name it). Scopes it no longer defines
    leave every grant in the same transaction."""
    if "identifier" in changes:
        raise _refused(
            "identifier", "The identifier cannot change; register the new one and delete this."
        )
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise ValidationFailed("Unknown fields.", errors={n: ["Unknown field."] for n in unknown})
    resource = resource_get(
        organization_id=organization_id, resource_id=resource_id, for_update=True
    )
    if "name" in changes:
        resource.name = _name_checked(changes["name"])
    if "scopes" in changes:
        resource.scopes = scopes_checked(changes["scopes"])
    if "access_token_lifetime" in changes:
        resource.access_token_lifetime = _lifetime_checked(changes["access_token_lifetime"])
    if "signing_algorithm" in changes:
        resource.signing_algorithm = _algorithm_checked(changes["signing_algorithm"])
    if "dpop_required" in changes:
        resource.dpop_required = _flag_checked(changes["dpop_required"], "dpop_required")
    if "metadata_hosted" in changes:
        resource.metadata_hosted = _flag_checked(changes["metadata_hosted"], "metadata_hosted")
    resource.save()
    if "scopes" in changes:
        defined = set(resource.scope_names)
        for grant in ResourceGrant.objects.filter(
            organization_id=organization_id, resource_id=resource.id
        ).select_for_update():
            kept = [s for s in grant.scopes if s in defined]
            if kept != grant.scopes:
                grant.scopes = kept
                grant.save(update_fields=["scopes", "updated_at"])
    changed: list[JSONValue] = [str(name) for name in sorted(changes)]
    event_record(
        organization_id=organization_id, actor=actor, action=UPDATED_EVENT,
        subject_type="resource", subject_id=str(resource.id),
        data={**_data(resource), "changed": changed},
    )  # fmt: skip
    return resource


@transaction.atomic
def resource_delete(
    *, actor: Principal, organization_id: uuid.UUID, resource_id: uuid.UUID
) -> None:
    """Remove a resource and its grants: no new token names it (tokens issued for it live out
    their lifetime; revoke them by agent to end them sooner)."""
    resource = resource_get(
        organization_id=organization_id, resource_id=resource_id, for_update=True
    )
    ResourceGrant.objects.filter(organization_id=organization_id, resource_id=resource.id).delete()
    resource.delete()
    event_record(
        organization_id=organization_id, actor=actor, action=DELETED_EVENT,
        subject_type="resource", subject_id=str(resource_id),
        data={"identifier": resource.identifier},
    )  # fmt: skip


def grant_scopes_checked(resource: Resource, value: object) -> list[str]:
    """A list of the resource's own scope names (sorted, once each), or a 400 on ``scopes``."""
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _refused("scopes", "An array of the resource's scope names.")
    unknown = sorted(set(value) - set(resource.scope_names))
    if unknown:
        raise _refused("scopes", f"Not scopes of this resource: {' '.join(unknown)}.")
    return sorted(set(value))


@transaction.atomic
def grant_set(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    resource_id: uuid.UUID,
    scopes: object,
    agent_id: uuid.UUID | None = None,
    role: str = "",
) -> ResourceGrant | None:
    """Which of the resource's scopes the agent ``agent_id`` (or every agent with ``role``) may
    be issued; an empty list removes the grant (``None``)."""
    if (agent_id is None) == (not role):
        raise ValidationFailed("Name an agent or a role.", errors={"agent": ["Or a role."]})
    if role and role not in MemberRole.values:
        raise _refused("role", f"One of {', '.join(MemberRole.values)}.")
    resource = resource_get(
        organization_id=organization_id, resource_id=resource_id, for_update=True
    )
    if (
        agent_id is not None
        and not Agent.objects.filter(organization_id=organization_id, id=agent_id).exists()
    ):
        raise NotFound("No such agent.")
    granted = grant_scopes_checked(resource, scopes)
    matches = ResourceGrant.objects.filter(organization_id=organization_id, resource=resource)
    matches = matches.filter(agent_id=agent_id) if agent_id else matches.filter(role=role)
    grant = matches.select_for_update().first()
    previous: list[JSONValue] = list(grant.scopes) if grant else []
    if not granted:
        if grant is not None:
            grant.delete()
        grant = None
    elif grant is None:
        grant = ResourceGrant.objects.create(
            organization_id=organization_id, resource=resource, agent_id=agent_id, role=role,
            scopes=granted,
        )  # fmt: skip
    else:
        grant.scopes = granted
        grant.save(update_fields=["scopes", "updated_at"])
    event_record(
        organization_id=organization_id, actor=actor, action=GRANT_EVENT,
        subject_type="resource", subject_id=str(resource.id),
        data={
            "identifier": resource.identifier,
            "agent_id": str(agent_id) if agent_id else None, "role": role or None,
            "scopes": list[JSONValue](granted), "previous": previous,
        },
    )  # fmt: skip
    return grant


# --- token requests --------------------------------------------------------------------------


class TargetRefused(Exception):
    """RFC 8707 ``invalid_target``; ``reason`` is audited."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def is_platform_audience(audiences: Sequence[str]) -> bool:
    """No audience asked for, or only the platform API's own."""
    return not audiences or list(audiences) == [api_audience()]


def target_resolve(
    *, organization_id: uuid.UUID, audiences: Sequence[str], agent_id: uuid.UUID
) -> Target:
    """The registered resource ``audiences`` names, in the organization the token is for,
    with what ``agent_id`` is granted on it (its own grant and its role's); refused unless
    exactly one resource of that organization's is named."""
    if len(audiences) != 1:
        raise TargetRefused(
            "several_resources", "Name one resource per token request (RFC 8707 2)."
        )
    identifier = audiences[0]
    resource = Resource.objects.filter(
        organization_id=organization_id, identifier=identifier
    ).first()
    if resource is None:
        raise TargetRefused(
            "unknown_resource",
            "The resource is not registered by the organization (or it is the platform "
            f"API's own, {api_audience()}).",
        )
    role = (
        OrganizationMember.objects.filter(organization_id=organization_id, agent_id=agent_id)
        .values_list("role", flat=True)
        .first()
    )
    holder = Q(agent_id=agent_id) | (Q(role=role) if role else Q(pk__in=[]))
    granted: set[str] = set()
    for scopes in ResourceGrant.objects.filter(
        holder, organization_id=organization_id, resource=resource
    ).values_list("scopes", flat=True):
        granted.update(str(scope) for scope in scopes)
    defined = frozenset(resource.scope_names)
    return Target(
        identifier=identifier,
        resource_id=resource.id,
        scopes=defined,
        granted=frozenset(granted) & defined,
        lifetime=resource.access_token_lifetime,
        signing_algorithm=resource.signing_algorithm,
        dpop_required=resource.dpop_required,
    )


TARGET_SYNTAX = "resource and audience must be absolute URIs without a fragment"
TARGET_REFUSED_EVENT = "token.target_refused"  # noqa: S105 - an event name


def target_refusal_record(
    client: Client, refused: TargetRefused, audiences: Sequence[str] = ()
) -> None:
    """Audit a token request refused for what it named (after the request, which rolls back)."""
    named: list[JSONValue] = [audience[:2048] for audience in audiences[:5]]
    client_refusal_record(
        client, TARGET_REFUSED_EVENT,
        {"reason": refused.reason, "error": "invalid_target", "resources": named},
    )  # fmt: skip
