"""Appending to and verifying the per-organization audit hash chain."""

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import cast

from django.db import connection, models
from django.utils import timezone

from agentidp.deadlines import commit_deadline
from agentidp.errors import JSONValue
from compliance.merkle import MerkleFrontier
from compliance.models import GENESIS_HASH, AuditChainHead, AuditEvent


def _holds_float(value: JSONValue) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_float(item) for item in value)
    return False


def stored_form(data: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """``data`` as PostgreSQL's jsonb gives it back, which is what the event's hash must cover:
    jsonb keeps numbers as ``numeric``, so a float Python writes with an exponent (``1e+16``)
    comes back as ``10000000000000000`` and ``-0.0`` as ``0.0``. Only data holding a float
    makes the round trip (one query); anything else is already in its stored form."""
    if not any(_holds_float(value) for value in data.values()):
        return dict(data)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb::text", [json.dumps(data)])
        row = cursor.fetchone()
    assert row is not None  # noqa: S101 - a SELECT of one value returns one row
    return cast(dict[str, JSONValue], json.loads(row[0]))


@dataclass(frozen=True, slots=True)
class EventContent:
    """What an audit event says, apart from its place in the chain (sequence, previous hash)."""

    event_id: uuid.UUID
    organization_id: uuid.UUID
    occurred_at: datetime
    actor_type: str
    actor_id: str
    action: str
    outcome: str
    subject_type: str
    subject_id: str
    data: Mapping[str, JSONValue]

    @classmethod
    def new(
        cls, *, organization_id: uuid.UUID, actor_type: str, actor_id: str, action: str,
        outcome: str, subject_type: str, subject_id: str, data: Mapping[str, JSONValue],
    ) -> "EventContent":  # fmt: skip
        """A new event, with a fresh id and the current time; ``data`` in its stored form."""
        return cls(
            event_id=uuid.uuid4(), organization_id=organization_id, occurred_at=timezone.now(),
            actor_type=actor_type, actor_id=actor_id, action=action, outcome=outcome,
            subject_type=subject_type, subject_id=subject_id, data=stored_form(data),
        )  # fmt: skip

    @classmethod
    def of(cls, event: AuditEvent) -> "EventContent":
        return cls(
            event_id=event.id,
            organization_id=event.organization_id,
            occurred_at=event.occurred_at,
            actor_type=event.actor_type,
            actor_id=event.actor_id,
            action=event.action,
            outcome=event.outcome,
            subject_type=event.subject_type,
            subject_id=event.subject_id,
            data=event.data,
        )

    def canonical(self, *, sequence: int | str, previous_hash: str) -> bytes:
        """The exact bytes hashed for the event: sorted-key compact JSON, UTC microsecond time."""
        document = {
            "id": str(self.event_id),
            "organization_id": str(self.organization_id),
            "sequence": sequence,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "action": self.action,
            "outcome": self.outcome,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "data": self.data,
            "previous_hash": previous_hash,
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    def canonical_parts(self) -> tuple[str, str, str]:
        """The canonical text around the two values only the locked chain head knows.

        Keys are sorted, so ``previous_hash`` and ``sequence`` are adjacent and follow
        ``data``; random sentinels mark where they go, so no event content can be mistaken for
        them.
        """
        previous_mark, sequence_mark = f"prev-{uuid.uuid4().hex}", f"seq-{uuid.uuid4().hex}"
        text = self.canonical(sequence=sequence_mark, previous_hash=previous_mark).decode()
        prefix, rest = text.split(previous_mark)
        middle, suffix = rest.split(f'"{sequence_mark}"')
        return prefix, middle, suffix


def audit_event_hash(event: AuditEvent) -> str:
    canonical = EventContent.of(event).canonical(
        sequence=event.sequence, previous_hash=event.previous_hash
    )
    return hashlib.sha256(canonical).hexdigest()


# What a statement parameter may be here (psycopg adapts each).
SQLValue = bool | int | float | str | bytes | date | datetime | uuid.UUID | None


@dataclass
class CompanionInsert:
    """An ``INSERT ... RETURNING id`` sent in the same statement as an audit append.

    A hot-path write and its audit record then cost one round trip, and they exist together
    or not at all (one statement: a data-modifying CTE beside the append). ``inserted_id`` is
    the new row's id once the statement has run.
    """

    sql: str
    params: Sequence[SQLValue]
    inserted_id: object = field(default=None, init=False)


AUDIT_APPEND_CALL = (
    "compliance_audit_append(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"
)


def audit_append_arguments(content: EventContent) -> list[SQLValue]:
    """The thirteen arguments of ``compliance_audit_append`` (in :data:`AUDIT_APPEND_CALL`'s
    order) that append the event ``content`` describes. For SQL that appends the event itself,
    such as the token endpoint's ``oidc_token_issue``."""
    prefix, middle, suffix = content.canonical_parts()
    return [
        content.organization_id, content.event_id, content.occurred_at, content.actor_type,
        content.actor_id, content.action, content.outcome, content.subject_type,
        content.subject_id, json.dumps(content.data, separators=(",", ":")), prefix, middle,
        suffix,
    ]  # fmt: skip


def audit_event_append(
    *,
    organization_id: uuid.UUID,
    actor_type: str,
    actor_id: str,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, JSONValue],
    outcome: str = "success",
    companion: CompanionInsert | None = None,
) -> AuditEvent:
    """Append one event to the organization's chain, in the caller's transaction.

    One statement (``compliance_audit_append``): it locks the organization's chain head, so
    sequences stay gapless and every ``previous_hash`` is its predecessor's ``hash`` however
    many writers race, and hashes the same canonical bytes :func:`audit_chain_verify` checks.
    With ``companion``, that INSERT runs in the same statement.
    """
    content = EventContent.new(
        organization_id=organization_id,
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        subject_type=subject_type,
        subject_id=subject_id,
        data=data,
    )
    params = audit_append_arguments(content)
    event = AuditEvent(
        id=content.event_id,
        organization_id=organization_id,
        occurred_at=content.occurred_at,
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        subject_type=subject_type,
        subject_id=subject_id,
        data=dict(content.data),
    )
    append = f"{AUDIT_APPEND_CALL} a"
    returned = "a.sequence, a.hash, a.previous_hash"
    returned += ", NULL" if companion is None else ", (SELECT id FROM companion)"
    deadline = commit_deadline()
    if deadline is not None:
        # in a request: the transaction commits only before this (compliance/0010); the
        # placeholder is in the select list, before the append's own
        returned += ", set_config('app.commit_deadline', %s, true)"
        params = [deadline, *params]
    if companion is None:
        sql = f"SELECT {returned} FROM {append}"  # noqa: S608 - constant SQL of our own
    else:
        # Constant SQL of our own on both sides; every value is a parameter.
        sql = f"WITH companion AS ({companion.sql}) SELECT {returned} FROM {append}"  # noqa: S608
        params = [*companion.params, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    assert row is not None  # noqa: S101 - the function always returns one row
    event.sequence, event.hash, event.previous_hash = int(row[0]), str(row[1]), str(row[2])
    event._state.adding = False
    if companion is not None:
        companion.inserted_id = row[3]
    return event


class ChainBreak(models.TextChoices):
    """Why a walk of the hash chain stopped: a stable code beside the sentence."""

    GAP = "sequence_gap", "A sequence number is missing inside the log"
    UNLINKED = "unlinked", "An event's previous_hash is not its predecessor's hash"
    ALTERED = "altered", "An event's contents no longer match its hash"
    MISSING_BEFORE_HEAD = "missing_before_head", "Events are missing before the chain head"


@dataclass(frozen=True)
class ChainVerification:
    """The result of walking one organization's chain (or the range ``first``..``last``)."""

    valid: bool
    events_checked: int
    head_sequence: int
    first_invalid_sequence: int | None = None
    first_invalid_event_id: uuid.UUID | None = None
    reason: str = ""
    first: int = 1
    last: int | None = None
    code: str = ""
    # MTH of the first n events' chain hashes, for each size asked for that the walk reached
    roots: dict[int, bytes] = field(default_factory=dict)
    # the greatest sequence number present (the log's real length when it has no gap)
    last_sequence: int = 0

    def as_document(self, organization_id: uuid.UUID) -> dict[str, JSONValue]:
        """The JSON the command, the endpoint and the beat task report: ``verified``,
        ``checked`` and ``brokenAtEventId`` (null unless an event fails), with the detail."""
        broken = str(self.first_invalid_event_id) if self.first_invalid_event_id else None
        document: dict[str, JSONValue] = {
            "organization_id": str(organization_id),
            "verified": self.valid,
            "checked": self.events_checked,
            "brokenAtEventId": broken,
            "from": self.first,
            "to": self.last,
            "valid": self.valid,
            "events_checked": self.events_checked,
            "head_sequence": self.head_sequence,
        }
        if not self.valid:
            document["first_invalid"] = {
                "sequence": self.first_invalid_sequence,
                "event_id": broken,
                "reason": self.reason,
                "code": self.code,
            }
        return document


# The canonical bytes of an event (EventContent.canonical) assembled from a row as fetched:
# sorted keys written out in order, strings through the same JSON encoder, so a million events
# are verified without building a model instance or a datetime each.
# The encoder's own quoting of a str (what ``_encode`` does with one, without its dispatch), and
# the decoder without its whitespace checks: jsonb's text has none around it. No cycle check:
# decoded JSON has no cycles.
_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False
).encode
_quote = json.encoder.encode_basestring
_decode = json.JSONDecoder().raw_decode
VERIFY_BATCH = 20_000
VERIFY_SQL = """
SELECT id::text, sequence,
       to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
       actor_type, actor_id, action, outcome, subject_type, subject_id, data::text,
       previous_hash IS NOT DISTINCT FROM lag(hash) OVER w,
       CASE WHEN lag(hash) OVER w IS NULL THEN previous_hash END,
       hash
  FROM compliance_auditevent
 WHERE organization_id = %s AND sequence > %s AND sequence <= %s
WINDOW w AS (ORDER BY sequence)
 ORDER BY sequence
 LIMIT %s
"""


def _row_hash(organization: str, row: tuple[str, ...], previous_hash: str) -> str | None:
    """The row's hash, or ``None`` for a row no event could have written (a column a superuser
    set to NULL, say): the caller reports it as altered."""
    event_id, sequence, occurred, actor_type, actor_id, action, outcome, subject_type, \
        subject_id, data = row[:10]  # fmt: skip
    try:
        canonical = (
            f'{{"action":{_quote(action)},"actor_id":{_quote(actor_id)},'
            f'"actor_type":{_quote(actor_type)},"data":{_encode(_decode(data)[0])},'
            f'"id":"{event_id}","occurred_at":"{occurred}+00:00",'
            f'"organization_id":"{organization}","outcome":{_quote(outcome)},'
            f'"previous_hash":"{previous_hash}","sequence":{sequence},'
            f'"subject_id":{_quote(subject_id)},"subject_type":{_quote(subject_type)}}}'
        )
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(canonical.encode()).hexdigest()


def audit_chain_verify(
    *,
    organization_id: uuid.UUID,
    first: int = 1,
    last: int | None = None,
    roots_at: Sequence[int] = (),
) -> ChainVerification:
    """Recompute every hash in order from sequence ``first`` to ``last`` (the head when
    ``None``); report the first break (gap, fork or altered event). A range starting after 1
    is anchored on its predecessor's stored hash; the head is checked when the range reaches
    it.

    ``roots_at`` (a walk from sequence 1 only): tree sizes at which to record the RFC 9162
    root of the events walked so far, computed in the same pass from their chain hashes
    (:class:`~compliance.merkle.MerkleFrontier`), so the integrity check compares signed
    checkpoints with the log itself rather than with the stored tree."""
    first = max(1, first)
    organization = str(organization_id)
    head = AuditChainHead.objects.filter(organization_id=organization_id).first()
    end = last if last is not None else (head.sequence if head else 0)
    wanted = sorted({size for size in roots_at if size >= 0}) if first == 1 else []
    tree = MerkleFrontier() if wanted else None
    roots: dict[int, bytes] = {}
    pending = 0  # index into wanted of the next size to record
    while tree is not None and pending < len(wanted) and wanted[pending] == 0:
        roots[0] = tree.root()
        pending += 1
    present = AuditEvent.objects.filter(organization_id=organization_id).order_by("-sequence")
    last_sequence = int(present.values_list("sequence", flat=True).first() or 0)
    if last is None:
        end = max(end, last_sequence)  # events past a head moved back are walked too
    expected_previous = GENESIS_HASH
    if first > 1:
        anchor = AuditEvent.objects.filter(organization_id=organization_id, sequence=first - 1)
        expected_previous = anchor.values_list("hash", flat=True).first() or ""
    expected_sequence, checked = first, 0

    def broken(
        row: tuple[str, ...] | None, sequence: int, code: ChainBreak, reason: str
    ) -> ChainVerification:
        return ChainVerification(
            valid=False, events_checked=checked, head_sequence=expected_sequence - 1,
            first_invalid_sequence=sequence,
            first_invalid_event_id=uuid.UUID(row[0]) if row else None,
            reason=reason, first=first, last=last, code=code.value, roots=roots,
            last_sequence=last_sequence,
        )  # fmt: skip

    with connection.cursor() as cursor:
        while expected_sequence <= end:
            cursor.execute(VERIFY_SQL, [organization_id, expected_sequence - 1, end, VERIFY_BATCH])
            rows = cursor.fetchall()
            if not rows:
                break
            # The database compares each previous_hash with the hash of the row before it in
            # the batch (``linked``); the first row's is compared here with the last verified.
            for index, row in enumerate(rows):
                if row[1] != expected_sequence:
                    reason = f"sequence gap: expected {expected_sequence}, found {row[1]}"
                    return broken(row, row[1], ChainBreak.GAP, reason)
                if not (row[10] if index else row[11] == expected_previous):
                    return broken(
                        row, row[1], ChainBreak.UNLINKED,
                        "previous_hash does not match the preceding event",
                    )  # fmt: skip
                if _row_hash(organization, row, expected_previous) != row[12]:
                    return broken(
                        row, row[1], ChainBreak.ALTERED, "hash does not match the event's contents"
                    )
                checked += 1
                expected_previous = row[12]
                if tree is not None and pending < len(wanted):
                    tree.append(bytes.fromhex(row[12]))
                    if tree.size == wanted[pending]:
                        roots[tree.size] = tree.root()
                        pending += 1
                expected_sequence += 1
    if expected_sequence <= end:
        return broken(
            None, expected_sequence, ChainBreak.MISSING_BEFORE_HEAD,
            "events missing before the chain head",
        )  # fmt: skip
    at_head = head is not None and (last is None or last >= head.sequence)
    if (
        at_head
        and head is not None
        and (head.sequence, head.hash) != (expected_sequence - 1, expected_previous)
    ):
        return broken(
            None, expected_sequence, ChainBreak.MISSING_BEFORE_HEAD,
            "chain head does not match the last event (events missing)",
        )  # fmt: skip
    return ChainVerification(
        valid=True, events_checked=checked, head_sequence=expected_sequence - 1,
        first=first, last=last, roots=roots, last_sequence=last_sequence,
    )  # fmt: skip


# What one event on a page of the audit log says about itself.
INTEGRITY_OK = "ok"
INTEGRITY_ALTERED = "altered"  # its contents no longer match its hash
INTEGRITY_UNLINKED = "unlinked"  # its previous_hash is not its predecessor's hash


def audit_events_integrity(
    *, organization_id: uuid.UUID, events: Sequence[AuditEvent]
) -> dict[uuid.UUID, str]:
    """Check each event of a page against its own hash and its predecessor's (one query for
    the predecessors not on the page), so a reader sees a tampered row flagged."""
    by_sequence = {event.sequence: event for event in events}
    missing = {event.sequence - 1 for event in events} - set(by_sequence) - {0}
    if missing:
        for event in AuditEvent.objects.filter(
            organization_id=organization_id, sequence__in=missing
        ):
            by_sequence[event.sequence] = event
    result: dict[uuid.UUID, str] = {}
    for event in events:
        predecessor = by_sequence.get(event.sequence - 1)
        expected = (
            GENESIS_HASH if event.sequence == 1 else (predecessor.hash if predecessor else None)
        )
        if audit_event_hash(event) != event.hash:
            result[event.id] = INTEGRITY_ALTERED
        elif expected is None or event.previous_hash != expected:
            result[event.id] = INTEGRITY_UNLINKED
        else:
            result[event.id] = INTEGRITY_OK
    return result
