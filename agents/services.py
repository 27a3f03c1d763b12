"""Every write to agents and their memberships, with the lifecycle rules."""

import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Protocol, cast

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agentidp.boundary import name_checked, text_refusal
from agentidp.conf import agentidp_settings
from agentidp.errors import Conflict, JSONValue, NotFound, QuotaExceeded, ValidationFailed
from agentidp.events import event_record
from agentidp.lifecycle import (
    AgentRegistration,
    AgentStatusChange,
    StaffAccessLost,
    agent_registered,
    agent_status_changed,
)
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from agentidp.trust import delegation_trust
from agents.choices import AgentStatus
from agents.models import ANY_ACTOR, MAX_DELEGATION_DEPTH, Agent, OrganizationMember
from organizations.choices import AGENT_SCOPES, MemberRole, OrganizationStatus
from organizations.models import StaffMembership
from organizations.services import organization_get

# A field's database-to-Python conversion (``Field.from_db_value``).
Converter = Callable[[object, None, object], object]
MAX_CAPABILITIES = 64


@cache
def _agent_by_id() -> tuple[str, list[str], list[tuple[int, Converter]]]:
    """The statement, the attribute names and the fields' own conversions (a JSON column
    arrives as text: the queryset compiler would parse it, ``Model.from_db`` does not)."""
    fields = Agent._meta.concrete_fields
    columns = ", ".join(f'"{field.column}"' for field in fields)
    sql = (
        f"SELECT {columns}, (SELECT u.username FROM auth_user u WHERE u.id = a.sponsor_id) "  # noqa: S608 - column names from the model
        "FROM agents_agent a WHERE a.organization_id = %s AND a.id = %s"
    )
    converters = [
        (index, field.from_db_value)
        for index, field in enumerate(fields)
        if hasattr(field, "from_db_value")
    ]
    return sql, [field.attname for field in fields], converters


def agent_get(
    *, organization_id: uuid.UUID, agent_id: uuid.UUID, for_update: bool = False
) -> Agent:
    """The organization's agent; another organization's agent is the same 404 as a missing one.

    The read every bearer-authenticated ``GET /agents/{id}`` makes: one fixed statement (so it
    is prepared once per connection) and ``Model.from_db``, rather than a queryset compiled and
    a raw queryset's column mapping worked out on every call.
    """
    if for_update:
        agent = (
            Agent.objects.select_for_update()
            .filter(organization_id=organization_id, id=agent_id)
            .first()
        )
    else:
        sql, names, converters = _agent_by_id()
        with connection.cursor() as cursor:
            cursor.execute(sql, [organization_id, agent_id])
            row = cursor.fetchone()
        agent = None
        if row is not None:
            values = list(row[:-1])
            for index, convert in converters:
                values[index] = convert(values[index], None, connection)
            agent = Agent.from_db(DEFAULT_DB_ALIAS, names, values)
            agent.__dict__["_sponsor_username"] = row[-1]
    if agent is None:
        raise NotFound("No such agent.")
    return agent


def _validate_metadata(metadata: Mapping[str, JSONValue]) -> None:
    limit = agentidp_settings().agent_metadata_max_bytes
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > limit:
        raise ValidationFailed(
            "Agent metadata is too large.",
            errors={"metadata": [f"At most {limit} bytes of JSON; got {size}."]},
        )


def _validate_capabilities(capabilities: Sequence[str]) -> list[str]:
    if len(capabilities) > MAX_CAPABILITIES:
        raise ValidationFailed(
            "Too many capabilities.", errors={"capabilities": [f"At most {MAX_CAPABILITIES}."]}
        )
    return list(dict.fromkeys(capabilities))


MAX_SKILLS = 50
SKILL_FIELDS = {"id": 100, "name": 200, "description": 2000}


def skills_checked(skills: object) -> list[JSONValue]:
    """Agent-card skills: a list of ``{id, name, description?, tags?}`` objects, ids unique."""
    if not isinstance(skills, list) or len(skills) > MAX_SKILLS:
        raise ValidationFailed(
            "Skills must be a list.", errors={"skills": [f"A list of at most {MAX_SKILLS}."]}
        )
    checked: list[JSONValue] = []
    for index, skill in enumerate(skills):
        problem = _skill_problem(skill)
        if problem:
            raise ValidationFailed("Invalid skill.", errors={f"skills.{index}": [problem]})
        assert isinstance(skill, dict)  # noqa: S101 - _skill_problem checked it
        checked.append(
            {key: skill[key] for key in ("id", "name", "description", "tags") if key in skill}
        )
    ids = [str(skill["id"]) for skill in skills]
    if len(set(ids)) != len(ids):
        raise ValidationFailed("Skill ids repeat.", errors={"skills": ["Each id once."]})
    return checked


def _skill_problem(skill: object) -> str:
    if not isinstance(skill, dict):
        return "An object."
    if set(skill) - {"id", "name", "description", "tags"}:
        return "Only id, name, description and tags."
    for key, limit in SKILL_FIELDS.items():
        value = skill.get(key, "")
        if key != "description" and not value:
            return f"{key} is required."
        if not isinstance(value, str) or len(value) > limit or text_refusal(value):
            return f"{key}: text of at most {limit} characters."
    tags = skill.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 20:
        return "tags: a list of at most 20."
    if any(not isinstance(t, str) or not t or len(t) > 50 or text_refusal(t) for t in tags):
        return "tags: texts of at most 50 characters."
    return ""


def _name_taken() -> Conflict:
    return Conflict(
        "An agent with this name exists in the organization.", errors={"name": ["Already taken."]}
    )


@transaction.atomic
def agent_register(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    name: str,
    description: str = "",
    capabilities: Sequence[str] = (),
    metadata: Mapping[str, JSONValue] | None = None,
    version: str = "1.0.0",
    skills: Sequence[JSONValue] = (),
    authors: Sequence[str] = (),
    sponsor: str | None = None,
) -> Agent:
    """Register an agent within the organization's ``max_agents`` quota, with its sponsor
    (:func:`sponsor_resolve`: the person named, or who is creating it) attesting now.

    The organization row is locked first, so two registrations at the limit serialize and
    only one can take the last place. Decommissioned agents do not count.
    """
    name = name_checked(name, field="name")
    metadata = dict(metadata or {})
    _validate_metadata(metadata)
    capabilities = _validate_capabilities(capabilities)
    checked_skills = skills_checked(list(skills))
    organization = organization_get(organization_id=organization_id, for_update=True)
    if organization.status != OrganizationStatus.ACTIVE:
        raise Conflict("The organization is suspended.")
    live = (
        Agent.objects.filter(organization_id=organization_id)
        .exclude(status=AgentStatus.DECOMMISSIONED)
        .count()
    )
    if live >= organization.max_agents:
        raise QuotaExceeded(
            f"The organization's plan allows {organization.max_agents} agents.",
            errors={"max_agents": [f"Limit of {organization.max_agents} reached."]},
        )
    sponsor_id = sponsor_resolve(actor=actor, organization_id=organization_id, username=sponsor)
    agent = Agent(
        organization_id=organization_id,
        name=name,
        description=description,
        capabilities=capabilities,
        metadata=metadata,
        version=version,
        skills=checked_skills,
        authors=list(authors),
        sponsor_id=sponsor_id,
        attested_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            agent.save(force_insert=True)
    except IntegrityError as exc:
        raise _name_taken() from exc
    recorded_capabilities: list[JSONValue] = [str(c) for c in capabilities]
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="agent.created",
        subject_type="agent",
        subject_id=str(agent.id),
        data={
            "name": name, "capabilities": recorded_capabilities,
            "sponsor": agent.sponsor_username,
        },
    )  # fmt: skip
    agent_registered(
        AgentRegistration(organization_id=organization_id, agent_id=agent.id, actor=actor)
    )
    agent.refresh_from_db()
    return agent


AGENT_UPDATABLE = (
    "name",
    "description",
    "capabilities",
    "metadata",
    "version",
    "skills",
    "authors",
)


@transaction.atomic
def agent_update(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    changes: Mapping[str, JSONValue],
) -> Agent:
    """Change name, description, capabilities or metadata; decommissioned agents are frozen."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    if agent.status == AgentStatus.DECOMMISSIONED:
        raise Conflict("A decommissioned agent cannot be edited.")
    unknown = sorted(set(changes) - set(AGENT_UPDATABLE))
    if unknown:
        raise ValidationFailed(
            "These fields cannot be changed.", errors={f: ["Not updatable."] for f in unknown}
        )
    metadata = changes.get("metadata")
    if isinstance(metadata, dict):
        _validate_metadata(metadata)
    capabilities = changes.get("capabilities")
    values = dict(changes)
    if isinstance(values.get("name"), str):
        values["name"] = name_checked(str(values["name"]), field="name")
    if isinstance(capabilities, list):
        values["capabilities"] = list(_validate_capabilities([str(c) for c in capabilities]))
    if "skills" in values:
        values["skills"] = skills_checked(values["skills"])
    changed = [field for field, value in values.items() if getattr(agent, field) != value]
    for field in changed:
        setattr(agent, field, values[field])
    if changed:
        try:
            with transaction.atomic():
                agent.save(update_fields=[*changed, "updated_at"])
        except IntegrityError as exc:
            raise _name_taken() from exc
        event_record(
            organization_id=organization_id,
            actor=actor,
            action="agent.updated",
            subject_type="agent",
            subject_id=str(agent.id),
            data={"changed": [str(name) for name in sorted(changed)]},
        )
    return agent


# Which status each lifecycle action may start from, and where it leads.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "suspended": (frozenset({AgentStatus.ACTIVE}), AgentStatus.SUSPENDED),
    "reactivated": (frozenset({AgentStatus.SUSPENDED}), AgentStatus.ACTIVE),
    "decommissioned": (
        frozenset({AgentStatus.ACTIVE, AgentStatus.SUSPENDED}),
        AgentStatus.DECOMMISSIONED,
    ),
}


class TransitionService(Protocol):
    """The shape shared by the lifecycle services (suspend, reactivate, decommission)."""

    def __call__(
        self, *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, reason: str = ""
    ) -> Agent: ...


def _after_not_before_second(not_before: float) -> None:
    """A token's ``iat`` is a whole second, and a token issued before ``tokens_not_before`` is
    refused: a token issued in the second of the last suspension would be refused although
    issued after the reactivation. So a reactivation that close to it waits for the next whole
    second (at most one; only a script or a test is that fast)."""
    wait = math.floor(not_before) + 1 - time.time()
    if wait > 0:
        time.sleep(wait)


def _agent_transition(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, event: str, reason: str
) -> Agent:
    if actor.kind == "agent" and actor.id == str(agent_id) and event != "reactivated":
        # An agent locking itself out would need another principal to undo it anyway.
        raise Conflict(f"An agent cannot be {event} by itself; another principal must do it.")
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    sources, target = TRANSITIONS[event]
    if agent.status not in sources:
        raise Conflict(
            f"An agent that is {agent.status} cannot be {event}.",
            errors={"status": [f"Is {agent.status}."]},
        )
    if target == AgentStatus.ACTIVE:
        _sponsor_check(agent)
        _attestation_check(agent)
    previous = agent.status
    agent.status = target
    updated = ["status", "updated_at"]
    if target != AgentStatus.ACTIVE:
        # Every token issued so far stops for good: reactivation does not revive them.
        agent.tokens_not_before = timezone.now()
        updated.append("tokens_not_before")
    elif agent.tokens_not_before is not None:
        _after_not_before_second(agent.tokens_not_before.timestamp())
    agent.save(update_fields=updated)
    agent_status_changed(
        AgentStatusChange(
            organization_id=organization_id,
            agent_id=agent.id,
            previous=previous,
            current=target,
            actor=actor,
        )
    )
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=f"agent.{event}",
        subject_type="agent",
        subject_id=str(agent.id),
        data={"from": previous, "to": target, "reason": reason},
    )
    return agent


@transaction.atomic
def agent_suspend(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, reason: str = ""
) -> Agent:
    """Stop an active agent from authenticating until reactivated."""
    return _agent_transition(
        actor=actor,
        organization_id=organization_id,
        agent_id=agent_id,
        event="suspended",
        reason=reason,
    )


@transaction.atomic
def agent_reactivate(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, reason: str = ""
) -> Agent:
    """Return a suspended agent to active."""
    return _agent_transition(
        actor=actor,
        organization_id=organization_id,
        agent_id=agent_id,
        event="reactivated",
        reason=reason,
    )


@transaction.atomic
def agent_decommission(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, reason: str = ""
) -> Agent:
    """Retire an agent for good: it can never be reactivated or edited."""
    return _agent_transition(
        actor=actor,
        organization_id=organization_id,
        agent_id=agent_id,
        event="decommissioned",
        reason=reason,
    )


@transaction.atomic
def member_add(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, role: str
) -> OrganizationMember:
    """Give one of the organization's agents a role (or change the role it has)."""
    if role not in MemberRole.values:
        raise ValidationFailed("Unknown role.", errors={"role": [f"One of {MemberRole.values}."]})
    organization = organization_get(organization_id=organization_id)
    agent = agent_get(organization_id=organization_id, agent_id=agent_id)
    if agent.status == AgentStatus.DECOMMISSIONED:
        raise Conflict("A decommissioned agent cannot become a member.")
    member = (
        OrganizationMember.objects.select_for_update()
        .filter(organization_id=organization.id, agent_id=agent.id)
        .first()
    )
    action = "member.added"
    if member is None:
        member = OrganizationMember.objects.create(
            organization_id=organization.id, agent=agent, role=role
        )
    elif member.role != role:
        member.role = role
        member.save(update_fields=["role", "updated_at"])
        action = "member.updated"
    else:
        return member
    event_record(
        organization_id=organization.id,
        actor=actor,
        action=action,
        subject_type="agent",
        subject_id=str(agent.id),
        data={"role": role},
    )
    return member


# --- delegation (RFC 8693 token exchange between the organization's agents) -----------------

MAX_DELEGATION_ACTORS = 100


def delegation_policy(agent: Agent) -> dict[str, JSONValue]:
    """The agent's delegation policy as the API shows it (``PUT /agents/{id}/delegation``)."""
    actors = agent.delegation_actors if isinstance(agent.delegation_actors, list) else []
    return {
        "actors": ANY_ACTOR if ANY_ACTOR in actors else list[JSONValue](actors),
        "scopes": list[JSONValue](agent.delegation_scopes),
        "max_depth": agent.delegation_max_depth,
    }


@transaction.atomic
def agent_delegation_set(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    actors: str | Sequence[uuid.UUID],
    scopes: Sequence[str],
    max_depth: int | None,
) -> Agent:
    """Who may act for the agent (``"*"``: any of the organization's agents, or those listed),
    which of its scopes they may be handed (empty: any it holds) and how long a chain may grow
    (``None``: the organization's default); recorded as ``agent.delegation_updated``."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    if agent.status == AgentStatus.DECOMMISSIONED:
        raise Conflict("A decommissioned agent cannot be edited.")
    errors: dict[str, list[str]] = {}
    listed: list[str] = []
    if isinstance(actors, str):
        if actors != ANY_ACTOR:
            errors["actors"] = ['"*" or a list of agent ids.']
        listed = [ANY_ACTOR]
    else:
        wanted = sorted({str(a) for a in actors})
        if len(wanted) > MAX_DELEGATION_ACTORS:
            errors["actors"] = [f"At most {MAX_DELEGATION_ACTORS} agents."]
        elif str(agent.id) in wanted:
            errors["actors"] = ["An agent does not act for itself."]
        else:
            known = {
                str(i)
                for i in Agent.objects.filter(
                    organization_id=organization_id, id__in=wanted
                ).values_list("id", flat=True)
            }
            unknown = [a for a in wanted if a not in known]
            unknown = [a for a in unknown if not _trusted_actor(organization_id, a)]
            if unknown:  # as for any id that names nothing here (another organization's too)
                raise NotFound(f"No such agent: {', '.join(unknown)}.")
        listed = wanted
    unknown_scopes = sorted(set(scopes) - AGENT_SCOPES)
    if unknown_scopes:
        errors["scopes"] = [f"Not scopes an agent can hold: {', '.join(unknown_scopes)}."]
    if max_depth is not None and not 1 <= max_depth <= MAX_DELEGATION_DEPTH:
        errors["max_depth"] = [f"From 1 to {MAX_DELEGATION_DEPTH}, or null."]
    if errors:
        raise ValidationFailed("Invalid delegation policy.", errors=errors)
    agent.delegation_actors = listed
    agent.delegation_scopes = sorted(set(scopes))
    agent.delegation_max_depth = max_depth
    agent.save(
        update_fields=[
            "delegation_actors",
            "delegation_scopes",
            "delegation_max_depth",
            "updated_at",
        ]
    )
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="agent.delegation_updated",
        subject_type="agent",
        subject_id=str(agent.id),
        data=delegation_policy(agent),
    )
    return agent


def _trusted_actor(organization_id: uuid.UUID, agent_id: str) -> bool:
    """Whether ``agent_id`` is an active agent of another organization that this one trusts
    to act for its agents (a partner entry for this deployment that allows delegation): only
    then may a policy name it. Anything else is, to the caller, an id that names nothing."""
    try:
        wanted = uuid.UUID(agent_id)
    except ValueError:
        return False
    with platform_context(reason="delegation-policy"):
        found = (
            Agent.objects.filter(id=wanted, status=AgentStatus.ACTIVE)
            .values_list("organization_id", flat=True)
            .first()
        )
    return found is not None and delegation_trust(organization_id, found) is not None


# --- sponsors and attestation ---------------------------------------------------------------

# How long before an attestation falls due its sponsor is warned (agent.attestation_due).
ATTESTATION_WARNING = timedelta(days=7)
SPONSORSHIP = "sponsorship"  # the system actor of suspensions for a sponsor or attestation


def _sponsor_membership(organization_id: uuid.UUID, username: str) -> StaffMembership:
    membership = (
        StaffMembership.objects.select_related("user")
        .filter(organization_id=organization_id, user__username=username, user__is_active=True)
        .first()
    )
    if membership is None:  # another organization's person is the same answer as nobody
        raise NotFound(
            "No such active person in the agent's organization (the sponsor must be one).",
            errors={"sponsor": ["Not an active person of this organization."]},
        )
    return membership


def _longest_standing_owner(organization_id: uuid.UUID) -> int | None:
    return (
        StaffMembership.objects.filter(
            organization_id=organization_id, role=MemberRole.OWNER, user__is_active=True
        )
        .order_by("created_at", "id")
        .values_list("user_id", flat=True)
        .first()
    )


def _active_person(organization_id: uuid.UUID, user_id: int | None) -> bool:
    return (
        user_id is not None
        and StaffMembership.objects.filter(
            organization_id=organization_id, user_id=user_id, user__is_active=True
        ).exists()
    )


def sponsor_resolve(*, actor: Principal, organization_id: uuid.UUID, username: str | None) -> int:
    """Who sponsors a new agent: the person named; else the person creating it; else, for an
    agent creating it, that agent's sponsor; else (commands, platform staff) the organization's
    longest-standing owner. Nobody: 409, since an agent with no sponsor cannot be active."""
    if username:
        return int(_sponsor_membership(organization_id, username).user_id)
    if actor.kind == "user" and actor.id.isdigit():
        if _active_person(organization_id, int(actor.id)):
            return int(actor.id)
    if actor.kind == "agent":
        creator = Agent.objects.filter(organization_id=organization_id, id=actor.id).first()
        if creator is not None and _active_person(organization_id, creator.sponsor_id):
            return int(cast(int, creator.sponsor_id))
    owner = _longest_standing_owner(organization_id)
    if owner is None:
        raise Conflict(
            "The agent needs a sponsor, and the organization has no active owner: name one.",
            errors={"sponsor": ["Name an active person of the organization."]},
        )
    return int(owner)


def _attestation_check(agent: Agent) -> None:
    period = organization_get(organization_id=agent.organization_id).attestation_period_days
    lapses = attestation_due_at(agent, period)
    if lapses is None or lapses <= timezone.now():
        raise Conflict(
            "The agent's attestation has lapsed: its sponsor attests first.",
            errors={"attested_at": ["Lapsed."]},
        )


def _sponsor_check(agent: Agent) -> None:
    """An agent is active only while an active person of its organization sponsors it."""
    if not _active_person(agent.organization_id, agent.sponsor_id):
        raise Conflict(
            "The agent has no active sponsor: reassign its sponsorship first.",
            errors={"sponsor": ["No active sponsor."]},
        )


@transaction.atomic
def agent_sponsor_set(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, username: str
) -> Agent:
    """Reassign who answers for the agent (``PUT /agents/{id}/sponsor``), recorded as
    ``agent.sponsor_changed``."""
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    if agent.status == AgentStatus.DECOMMISSIONED:
        raise Conflict("A decommissioned agent cannot be edited.")
    membership = _sponsor_membership(organization_id, username)
    previous = agent.sponsor_username
    agent.sponsor = membership.user
    agent.save(update_fields=["sponsor", "updated_at"])
    event_record(
        organization_id=organization_id, actor=actor, action="agent.sponsor_changed",
        subject_type="agent", subject_id=str(agent.id),
        data={"from": previous, "to": membership.user.get_username()},
    )  # fmt: skip
    return agent


@transaction.atomic
def agents_attest(
    *, actor: Principal, organization_id: uuid.UUID, agent_ids: Sequence[uuid.UUID]
) -> int:
    """The sponsor (or staff for them) attests that these agents are still needed: each
    attestation runs one more period, recorded as ``agent.attested``. How many."""
    agents = list(
        Agent.objects.select_for_update()
        .filter(organization_id=organization_id, id__in=list(agent_ids))
        .exclude(status=AgentStatus.DECOMMISSIONED)
        .order_by("id")
    )
    if len(agents) != len(set(agent_ids)):
        raise NotFound("No such agent (or it is decommissioned).")
    now = timezone.now()
    for agent in agents:
        agent.attested_at = now
        agent.attestation_warned_at = None
        agent.save(update_fields=["attested_at", "attestation_warned_at", "updated_at"])
        event_record(
            organization_id=organization_id, actor=actor, action="agent.attested",
            subject_type="agent", subject_id=str(agent.id),
            data={"sponsor": agent.sponsor_username, "attested_at": now.isoformat()},
        )  # fmt: skip
    return len(agents)


def attestation_due_at(agent: Agent, period_days: int) -> dt.datetime | None:
    """When the agent's current attestation lapses."""
    if agent.attested_at is None:
        return None
    return agent.attested_at + timedelta(days=period_days)


def _suspend_for(
    *, organization_id: uuid.UUID, agents: Sequence[Agent], actor: Principal, reason: str
) -> int:
    suspended = 0
    for agent in agents:
        itself = actor.kind == "agent" and actor.id == str(agent.id)  # it cannot stop itself
        if agent.status == AgentStatus.ACTIVE and not itself:
            _agent_transition(
                actor=actor, organization_id=organization_id, agent_id=agent.id,
                event="suspended", reason=reason,
            )  # fmt: skip
            suspended += 1
    return suspended


@dataclass(frozen=True)
class AttestationRun:
    warned: int
    suspended: int


@transaction.atomic
def attestations_enforce(*, organization_id: uuid.UUID) -> AttestationRun:
    """The beat job's work for one organization: warn the sponsors of agents whose attestation
    lapses within 7 days (``agent.attestation_due``, once per period), and suspend the agents
    whose attestation has lapsed (the system acting, reason ``attestation_lapsed``)."""
    organization = organization_get(organization_id=organization_id)
    period = timedelta(days=organization.attestation_period_days)
    now = timezone.now()
    active = _active_agents(organization_id, None).select_for_update()
    lapsed = list(active.filter(Q(attested_at__isnull=True) | Q(attested_at__lte=now - period)))
    actor = Principal.system(SPONSORSHIP, organization_id=organization_id)
    suspended = _suspend_for(
        organization_id=organization_id, agents=lapsed, actor=actor, reason="attestation_lapsed"
    )
    due = list(
        active.filter(
            attested_at__gt=now - period,
            attested_at__lte=now - period + ATTESTATION_WARNING,
            attestation_warned_at__isnull=True,
        )
    )
    for agent in due:
        agent.attestation_warned_at = now
        agent.save(update_fields=["attestation_warned_at"])
        lapses = cast(dt.datetime, agent.attested_at) + period
        event_record(
            organization_id=organization_id, actor=actor, action="agent.attestation_due",
            subject_type="agent", subject_id=str(agent.id),
            data={"sponsor": agent.sponsor_username, "lapses_at": lapses.isoformat()},
        )  # fmt: skip
    return AttestationRun(warned=len(due), suspended=suspended)


def _active_agents(organization_id: uuid.UUID, sponsor_id: int | None) -> QuerySet[Agent]:
    """The organization's active agents, or those of one sponsor, in a stable order."""
    agents = Agent.objects.filter(organization_id=organization_id, status=AgentStatus.ACTIVE)
    if sponsor_id is not None:
        agents = agents.filter(sponsor_id=sponsor_id)
    return agents.order_by("id")


@dataclass(frozen=True)
class KillSwitchScope:
    """What the kill switch would stop: the active agents (ids and names) and how many live
    tokens they hold."""

    agent_ids: list[uuid.UUID]
    names: list[str]
    live_tokens: int


def kill_switch_scope(
    *,
    organization_id: uuid.UUID,
    sponsor: str | None,
    live_tokens: Callable[[list[uuid.UUID]], int],
) -> KillSwitchScope:
    """The agents the kill switch would suspend: every active agent of the organization, or of
    one sponsor (``sponsor``, a username of the organization's people)."""
    sponsor_id = _sponsor_any(organization_id, sponsor) if sponsor else None
    rows = list(_active_agents(organization_id, sponsor_id).values_list("id", "name"))
    ids = [agent_id for agent_id, _ in rows]
    return KillSwitchScope(
        agent_ids=ids, names=sorted(name for _, name in rows),
        live_tokens=live_tokens(ids) if ids else 0,
    )  # fmt: skip


def _sponsor_any(organization_id: uuid.UUID, username: str) -> int:
    """A person of the organization, active or not (a departed sponsor's agents may still be
    stopped)."""
    user_id = (
        StaffMembership.objects.filter(organization_id=organization_id, user__username=username)
        .values_list("user_id", flat=True)
        .first()
    )
    if user_id is None:
        user_id = (
            Agent.objects.filter(organization_id=organization_id, sponsor__username=username)
            .values_list("sponsor_id", flat=True)
            .first()
        )
    if user_id is None:
        raise NotFound(
            "No such sponsor in this organization.",
            errors={"sponsor": ["Not a person of this organization."]},
        )
    return int(user_id)


@transaction.atomic
def kill_switch(
    *, actor: Principal, organization_id: uuid.UUID, sponsor: str | None, reason: str
) -> int:
    """Suspend every active agent of the organization, or of one sponsor, at once (their
    tokens and delegation trees revoked with them); one ``agents.kill_switch`` event besides
    each agent's ``agent.suspended``. How many agents."""
    sponsor_id = _sponsor_any(organization_id, sponsor) if sponsor else None
    stopped = list(_active_agents(organization_id, sponsor_id).select_for_update())
    suspended = _suspend_for(
        organization_id=organization_id, agents=stopped, actor=actor,
        reason=reason or "kill switch",
    )  # fmt: skip
    event_record(
        organization_id=organization_id, actor=actor, action="agents.kill_switch",
        subject_type="organization", subject_id=str(organization_id),
        data={"sponsor": sponsor or None, "suspended": suspended, "reason": reason},
    )  # fmt: skip
    return suspended


def sponsor_access_follow(change: StaffAccessLost) -> None:
    """Lifecycle hook: a sponsor deactivated or removed from the organization leaves no agent
    active that they answered for; each is suspended at once, the system acting for that
    reason (reassign the sponsorship first to keep an agent running)."""
    with tenant_context(change.organization_id):
        agents = list(_active_agents(change.organization_id, change.user_id).select_for_update())
        _suspend_for(
            organization_id=change.organization_id, agents=agents,
            actor=Principal.system(SPONSORSHIP, organization_id=change.organization_id),
            reason=f"{change.reason}: {change.username}",
        )  # fmt: skip
