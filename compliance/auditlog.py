"""The audit log in the admin, for people: who acted by name and role, whole ids with a link to
each subject, filters by action, actor, subject and date, and the filtered events exported (CSV
or JSON Lines) with each event's chain hash and where its Merkle inclusion proof is."""

import bisect
import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from agentidp.conf import agentidp_settings
from agentidp.tenancy import platform_context
from agents.models import Agent
from compliance.models import AuditCheckpoint, AuditEvent
from organizations.models import Organization

ADMIN_PAGES = {
    "agent": "admin:agents_agent_change",
    "credential": "admin:credentials_clientsecret_change",
    "federation_partner": "admin:federation_federationpartner_change",
    "organization": "admin:organizations_organization_change",
    "webhook": "admin:webhooks_webhooksubscription_change",
    "webhook_delivery": "admin:webhooks_webhookdelivery_change",
    "signing_key": "admin:oidc_signingkey_change",
}
"""The admin page of each kind of subject that has one (the rest link to their events)."""


def system_actor(actor_id: str) -> str:
    """``beat:rotate-signing-keys`` -> ``beat: rotate-signing-keys``; others ``system: name``."""
    kind, _, name = actor_id.partition(":")
    return f"{kind}: {name}" if name else f"system: {actor_id}"


@dataclass(frozen=True)
class Names:
    """Who the users and agents of some events are: two queries for a page of events."""

    users: dict[str, str]
    agents: dict[str, str]
    organizations: dict[str, str]
    platform: bool = False

    @classmethod
    def of(cls, events: Iterable[AuditEvent], *, platform: bool = False) -> "Names":
        events = list(events)
        user_ids = {
            int(e.actor_id) for e in events
            if e.actor_type == "user" and e.actor_id.isdigit() and not _recorded_actor(e)
        }  # fmt: skip
        agent_ids = {
            found for found in (
                _uuid(e.actor_id) if e.actor_type == "agent" else
                _uuid(e.subject_id) if e.subject_type == "agent" else None
                for e in events
            ) if found is not None
        }  # fmt: skip
        users = {
            str(pk): name
            for pk, name in User.objects.filter(pk__in=user_ids).values_list("pk", "username")
        }
        agents = {
            str(pk): name
            for pk, name in Agent.objects.filter(id__in=agent_ids).values_list("id", "name")
        }
        org_ids = {e.organization_id for e in events}
        with platform_context(reason="admin:audit-names"):
            organizations = {
                str(pk): slug
                for pk, slug in Organization.objects.filter(id__in=org_ids).values_list(
                    "id", "slug"
                )
            }
        return cls(users, agents, organizations, platform)

    def actor(self, event: AuditEvent) -> str:
        """The person or agent as a person reads it: ``alice (owner)``, ``agent billing-bot``,
        ``beat: rotate-signing-keys``."""
        kind, actor_id = event.actor_type, event.actor_id
        if kind == "user":
            recorded = _recorded_actor(event)
            if recorded:
                name, role = recorded
                return f"{name} ({role})" if role else name
            return self.users.get(actor_id, f"user {actor_id}")
        if kind == "agent":
            return f"agent {self.agents.get(actor_id, actor_id)}"
        if kind == "system":
            return system_actor(actor_id)
        if kind == "federated":
            return f"partner agent {actor_id}"
        return f"{kind} {actor_id}"

    def subject_name(self, event: AuditEvent) -> str:
        if event.subject_type == "agent":
            return self.agents.get(event.subject_id, "")
        if event.subject_type == "staff":
            return str(event.data.get("username", "")) if isinstance(event.data, dict) else ""
        return ""


def _recorded_actor(event: AuditEvent) -> tuple[str, str] | None:
    """The username and role the event recorded as the person acted (``data.actor``)."""
    actor = event.data.get("actor") if isinstance(event.data, dict) else None
    if isinstance(actor, dict) and isinstance(actor.get("username"), str):
        role = actor.get("role")
        return str(actor["username"]), str(role) if isinstance(role, str) else ""
    return None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def subject_url(event: AuditEvent, *, platform: bool) -> str:
    """Where the subject is: its admin page, or (with none, or once it is gone) its events."""
    page = ADMIN_PAGES.get(event.subject_type)
    if page and (platform or event.subject_type != "signing_key"):
        try:
            return reverse(page, args=[event.subject_id])
        except NoReverseMatch:
            pass
    query = urlencode({"subject": f"{event.subject_type}:{event.subject_id}"})
    return f"{reverse('admin:compliance_auditevent_changelist')}?{query}"


class AuditChangeList(ChangeList):
    """The page's events with their actors' and subjects' names, looked up once per page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        principal = getattr(request, "principal", None)
        platform = bool(getattr(principal, "is_platform", False))
        names = Names.of(self.result_list, platform=platform)
        for event in self.result_list:
            event.names = names


# --- filters ---------------------------------------------------------------------------------


class ActorFilter(admin.SimpleListFilter):
    """By actor: the people, agents and jobs that acted lately (any other through the ``actor``
    parameter, as the actor column's links set it)."""

    title = "actor"
    parameter_name = "actor"
    RECENT = 25

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[AuditEvent]
    ) -> list[tuple[str, str]]:
        recent = (
            model_admin.get_queryset(request)
            .order_by("-occurred_at")
            .values_list("actor_type", "actor_id", "data__actor")[:500]
        )
        seen: dict[str, AuditEvent] = {}
        for actor_type, actor_id, recorded in recent:
            key = f"{actor_type}:{actor_id}"
            if key not in seen and len(seen) < self.RECENT:
                seen[key] = AuditEvent(
                    actor_type=actor_type,
                    actor_id=actor_id,
                    data={"actor": recorded} if recorded else {},
                )
        names = Names.of(seen.values())
        return sorted(
            ((key, names.actor(event)) for key, event in seen.items()), key=lambda c: c[1]
        )

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> QuerySet[AuditEvent]:
        value = self.value()
        if not value:
            return queryset
        actor_type, _, actor_id = value.partition(":")
        return queryset.filter(actor_type=actor_type, actor_id=actor_id)


class SubjectFilter(admin.SimpleListFilter):
    """By subject: a kind (``agent``), or one subject (``agent:<id>``, as each subject's "its
    events" link sets it)."""

    title = "subject"
    parameter_name = "subject"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[AuditEvent]
    ) -> list[tuple[str, str]]:
        kinds = (
            model_admin.get_queryset(request)
            .order_by()
            .values_list("subject_type", flat=True)
            .distinct()
        )
        return [(kind, f"any {kind.replace('_', ' ')}") for kind in sorted(kinds)]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> QuerySet[AuditEvent]:
        value = self.value()
        if not value:
            return queryset
        subject_type, _, subject_id = value.partition(":")
        queryset = queryset.filter(subject_type=subject_type)
        return queryset.filter(subject_id=subject_id) if subject_id else queryset


class DateRangeFilter(admin.ListFilter):
    """From one day to another (inclusive, UTC), typed as dates."""

    title = "date range"
    template = "admin/compliance/auditevent/date_range_filter.html"
    PARAMETERS = ("occurred_from", "occurred_to")

    def __init__(
        self, request: HttpRequest, params: dict[str, list[str]], model: type[AuditEvent],
        model_admin: admin.ModelAdmin[AuditEvent],
    ) -> None:  # fmt: skip
        super().__init__(request, params, model, model_admin)
        self.typed: dict[str, str] = {}
        self.dates: dict[str, date] = {}
        self.problems: list[str] = []
        for name in self.PARAMETERS:
            if name not in params:
                continue
            raw = params.pop(name)
            text = (raw[-1] if isinstance(raw, list) else str(raw)).strip()
            self.typed[name] = text
            if not text:
                continue
            try:
                self.dates[name] = date.fromisoformat(text)
            except ValueError:
                self.problems.append(f"{text[:20]!r} is not a date (YYYY-MM-DD).")
            self.used_parameters[name] = text

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.PARAMETERS)

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, object]]:
        keep = [
            (name, value)
            for name, values in changelist.get_filters_params().items()
            if name not in self.PARAMETERS
            for value in (values if isinstance(values, list) else [values])
        ]
        yield {"typed": self.typed, "problems": self.problems, "keep": keep,
               "clear": changelist.get_query_string(remove=list(self.PARAMETERS))}  # fmt: skip

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> QuerySet[AuditEvent]:
        start, end = self.dates.get("occurred_from"), self.dates.get("occurred_to")
        if start:
            queryset = queryset.filter(
                occurred_at__gte=datetime.combine(start, time.min, tzinfo=UTC)
            )
        if end:
            end_moment = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
            queryset = queryset.filter(occurred_at__lt=end_moment)
        return queryset


# --- export ----------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "sequence", "id", "occurred_at", "organization", "action", "outcome", "actor", "actor_type",
    "actor_id", "subject_type", "subject_id", "data", "previous_hash", "hash", "leaf_index",
    "checkpoint_number", "checkpoint_tree_size", "checkpoint_root_hash", "proof",
)  # fmt: skip
"""What an auditor needs to verify each event offline: its content, its chain hash (which its
successor's ``previous_hash`` repeats), its leaf in the Merkle tree, the first signed checkpoint
whose tree holds it, and the URL of its inclusion proof against that checkpoint."""

CHUNK = 1000


class Checkpoints:
    """The signed checkpoints of the organizations exported, for the first that holds each
    event."""

    def __init__(self) -> None:
        self._by_organization: dict[uuid.UUID, tuple[list[int], list[AuditCheckpoint]]] = {}

    def first_holding(self, event: AuditEvent) -> AuditCheckpoint | None:
        if event.organization_id not in self._by_organization:
            ordered = list(
                AuditCheckpoint.objects.filter(organization_id=event.organization_id).order_by(
                    "tree_size", "number"
                )
            )
            self._by_organization[event.organization_id] = ([c.tree_size for c in ordered], ordered)
        sizes, checkpoints = self._by_organization[event.organization_id]
        index = bisect.bisect_left(sizes, event.sequence)
        return checkpoints[index] if index < len(checkpoints) else None


class Scope(Protocol):
    """A context that sees the exported organizations' rows (``tenant_context`` of one, or the
    platform's)."""

    def __call__(self) -> AbstractContextManager[None]: ...


def export_rows(events: QuerySet[AuditEvent], scope: Scope) -> Iterator[dict[str, str | int]]:
    """Each event of ``events`` as one export row, by organization and sequence: a chunk at a
    time, each read in its own short transaction (a download as slow as its client holds no
    transaction open)."""
    issuer = agentidp_settings().issuer
    checkpoints = Checkpoints()
    last: tuple[uuid.UUID, int] | None = None
    while True:
        with scope():
            page = events.order_by("organization_id", "sequence")
            if last is not None:
                page = page.filter(
                    Q(organization_id__gt=last[0])
                    | Q(organization_id=last[0], sequence__gt=last[1])
                )
            chunk = list(page[:CHUNK])
            rows = list(_rows(chunk, checkpoints, issuer))
        yield from rows
        if len(chunk) < CHUNK:
            return
        last = (chunk[-1].organization_id, chunk[-1].sequence)


def _rows(
    events: list[AuditEvent], checkpoints: Checkpoints, issuer: str
) -> Iterator[dict[str, str | int]]:
    names = Names.of(events)
    for event in events:
        checkpoint = checkpoints.first_holding(event)
        yield {
            "sequence": event.sequence, "id": str(event.id),
            "occurred_at": event.occurred_at.isoformat(),
            "organization": names.organizations.get(str(event.organization_id), str(event.organization_id)),
            "action": event.action, "outcome": event.outcome, "actor": names.actor(event),
            "actor_type": event.actor_type, "actor_id": event.actor_id,
            "subject_type": event.subject_type, "subject_id": event.subject_id,
            "data": json.dumps(event.data, sort_keys=True, separators=(",", ":")),
            "previous_hash": event.previous_hash, "hash": event.hash,
            "leaf_index": event.sequence - 1,
            "checkpoint_number": checkpoint.number if checkpoint else "",
            "checkpoint_tree_size": checkpoint.tree_size if checkpoint else "",
            "checkpoint_root_hash": checkpoint.root_hash if checkpoint else "",
            "proof": f"{issuer}/audit/{event.id}/proof?tree_size={checkpoint.tree_size}" if checkpoint else "",
        }  # fmt: skip


def export_response(
    events: QuerySet[AuditEvent], *, scope: Scope, fmt: str, name: str
) -> StreamingHttpResponse:
    """The events as CSV (a header row first) or JSON Lines, streamed."""
    if fmt == "csv":

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in export_rows(events, scope):
                writer.writerow(row)
                if buffer.tell() > 65536:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    else:
        rows = (json.dumps(row, sort_keys=True) + "\n" for row in export_rows(events, scope))
        response = StreamingHttpResponse(rows, content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


def id_code(value: str) -> str:
    return format_html('<code class="agentidp-id">{}</code>', value)
