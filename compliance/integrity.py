"""The audit log's integrity, checked against what was signed and what left the database.

The hash chain alone proves nothing against whoever runs the database: they can edit an event,
recompute every later hash and move the chain head, and the chain verifies. What they cannot
forge is the deployment's signature (its private keys live in the secret store) or the copies
of each checkpoint that left the database as it was signed (:mod:`compliance.anchors`). So
every verification here (the hourly job, ``GET /audit/verify``, ``verifyauditchain``, the
report) walks the chain *and*:

* recomputes, in the same pass, the RFC 9162 root of the log at the size of every checkpoint
  it holds and every anchor outside the database, and compares it with the signed root; the
  first mismatch is bracketed between the last checkpoint that still matches and the first
  that does not, and the events in that bracket are compared with the signed tree's leaves,
  naming the first event that differs (``rewritten``; ``sequence_reused`` when that event was
  recorded after the checkpoint that covered its sequence number);
* refuses a log shorter than its newest checkpoint (``truncated``), a chain head that is not
  the last event (``missing_before_head``), checkpoints that are missing, unchained, or whose
  tree size goes backwards, and checkpoints that differ from their copy outside the database;
* verifies the signature of the newest checkpoint, of the first of every UTC day, of every
  anchored one and of any that disagrees with the log, each under the public key kept with it
  (which must be the deployment's key of that ``kid`` while that key is known).

A failure is recorded the same way whoever found it (:func:`audit_integrity_verify_recorded`):
a failed ``audit-chain-verify`` job run (the ``agentidp_audit_chain_integrity`` gauge reads the
latest run: 0), an ``audit.integrity_failed`` event on the organization's chain (webhooks and
streams), and an error log naming the organization, the event and the reason.

:func:`audit_integrity_quick_check` is the part that costs a few indexed reads rather than a
walk of the log: the checkpoint job runs it before it signs anything (a log that fails it is
not signed over), and the audit-integrity control runs it on every evaluation.
"""

import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.db import connection, models, transaction
from django.utils import timezone
from prometheus_client import Counter

from agentidp.errors import JSONValue
from agentidp.events import event_record
from agentidp.principals import Principal
from agentidp.secrets import SecretStoreError
from agentidp.tenancy import platform_context
from compliance.anchors import Anchor, AnchorCopy, anchor_publish_after_commit, anchor_read
from compliance.checkpoints import checkpoint_latest, checkpoint_sign, checkpoint_signature_problem
from compliance.merkle import (
    EMPTY_ROOT,
    MerkleGap,
    leaf_hash,
    merkle_extend,
    root_hash,
    stored_leaves,
    tree_size,
)
from compliance.models import AuditChainHead, AuditCheckpoint, AuditEvent, JobOutcome, JobRun
from compliance.services import ChainBreak, audit_chain_verify
from oidc.models import SigningKey
from organizations.models import SYSTEM_ORGANIZATION_ID
from webhooks.choices import EventType

logger = logging.getLogger("agentidp.audit")

JOB = "audit-chain-verify"
CHECKPOINT_JOB = "audit-checkpoint"
EXTEND_PER_RUN = 200_000
MAX_FINDINGS = 20

CHAIN_VERIFICATIONS = Counter(
    "agentidp_audit_chain_verifications_total",
    "Audit chain verifications by result (valid, invalid).",
    ["result"],
)
INTEGRITY_FAILURES = Counter(
    "agentidp_audit_integrity_failures_total",
    "Audit integrity failures found, by the first finding's code.",
    ["code"],
)


class Problem(models.TextChoices):
    """What the checks beyond the hash chain find (the chain's own breaks: ChainBreak)."""

    TRUNCATED = "truncated", "The log is shorter than a checkpoint signed over it"
    REWRITTEN = "rewritten", "An event is not the one a signed checkpoint covered"
    SEQUENCE_REUSED = (
        "sequence_reused",
        "A sequence number a signed checkpoint covered holds an event recorded after it",
    )
    TREE_ALTERED = "tree_altered", "The stored Merkle tree no longer gives a signed root"
    CHECKPOINT_MISSING = "checkpoint_missing", "A signed checkpoint was deleted"
    CHECKPOINT_CHAIN_BROKEN = (
        "checkpoint_chain_broken",
        "A checkpoint does not name the one before it",
    )
    CHECKPOINT_SIZE_BACKWARDS = (
        "checkpoint_size_backwards",
        "A checkpoint's tree is smaller than the one before it",
    )
    CHECKPOINT_SIGNATURE = "checkpoint_signature_invalid", "A checkpoint's signature fails"
    CHECKPOINT_COPY_MISMATCH = (
        "checkpoint_copy_mismatch",
        "A checkpoint differs from its copy outside the database",
    )


CHAIN_CODES = frozenset(ChainBreak.values)


@dataclass(frozen=True)
class Finding:
    """One thing that is wrong: its code, a sentence, and where (event, checkpoint)."""

    code: str
    reason: str
    sequence: int | None = None
    event_id: uuid.UUID | None = None
    checkpoint: int | None = None

    def as_document(self) -> dict[str, JSONValue]:
        return {
            "code": self.code,
            "reason": self.reason,
            "sequence": self.sequence,
            "event_id": str(self.event_id) if self.event_id else None,
            "checkpoint": self.checkpoint,
        }


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Breaks of the chain first (they name an event), then by sequence number, then the rest
    (checkpoint findings), each group in the order found."""
    indexed = list(enumerate(findings))
    indexed.sort(
        key=lambda item: (
            0 if item[1].code in CHAIN_CODES else 1,
            item[1].sequence if item[1].sequence is not None else math.inf,
            item[0],
        )
    )
    return [finding for _, finding in indexed]


@dataclass(frozen=True)
class IntegrityReport:
    """One verification's result. ``complete``: the whole log against every checkpoint and
    anchor (not a range, not the quick check)."""

    organization_id: uuid.UUID
    findings: list[Finding]
    complete: bool
    events_checked: int = 0
    head_sequence: int = 0
    first: int = 1
    last: int | None = None
    checks: dict[str, JSONValue] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return not self.findings

    @property
    def primary(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def as_document(self) -> dict[str, JSONValue]:
        """``verified``, ``checked`` and ``brokenAtEventId`` (the first event that does not
        verify, when there is one), the first finding and every finding, what was compared."""
        primary = self.primary
        broken = str(primary.event_id) if primary and primary.event_id else None
        document: dict[str, JSONValue] = {
            "organization_id": str(self.organization_id),
            "verified": self.verified,
            "checked": self.events_checked,
            "brokenAtEventId": broken,
            "from": self.first,
            "to": self.last,
            "valid": self.verified,
            "events_checked": self.events_checked,
            "head_sequence": self.head_sequence,
            "complete": self.complete,
            "checks": self.checks,
        }
        if primary is not None:
            document["first_invalid"] = primary.as_document()
            document["findings"] = [f.as_document() for f in self.findings[:MAX_FINDINGS]]
        return document


# --- checkpoints: their chain, their copy, their signatures ----------------------------------

STRUCTURE_SQL = """
SELECT number, tree_size, previous_tree_size, previous_root_hash, prev_number, prev_size,
       prev_root
  FROM (SELECT number, tree_size, previous_tree_size, previous_root_hash,
               lag(number) OVER w AS prev_number, lag(tree_size) OVER w AS prev_size,
               lag(root_hash) OVER w AS prev_root
          FROM compliance_auditcheckpoint WHERE organization_id = %s
        WINDOW w AS (ORDER BY number)) c
 WHERE number <> COALESCE(prev_number, 0) + 1
    OR (prev_number IS NULL AND (previous_tree_size <> 0 OR previous_root_hash <> %s))
    OR (prev_number IS NOT NULL
        AND (previous_tree_size <> prev_size OR previous_root_hash <> prev_root))
    OR tree_size < previous_tree_size OR tree_size < COALESCE(prev_size, 0)
 ORDER BY number
 LIMIT 20
"""


def _structure_findings(organization_id: uuid.UUID) -> list[Finding]:
    """Checkpoints numbered 1, 2, 3, ... each naming the one before it, trees never
    shrinking: one query returns the rows that break a rule."""
    with connection.cursor() as cursor:
        cursor.execute(STRUCTURE_SQL, [organization_id, EMPTY_ROOT.hex()])
        rows = cursor.fetchall()
    findings: list[Finding] = []
    for number, size, previous_size, previous_root, prev_number, prev_size, prev_root in rows:
        expected = (prev_number or 0) + 1
        if number != expected:
            missing = f"#{expected}" if number == expected + 1 else f"#{expected} to #{number - 1}"
            findings.append(Finding(
                Problem.CHECKPOINT_MISSING,
                f"checkpoint {missing} is missing: signed checkpoints were deleted",
                checkpoint=expected,
            ))  # fmt: skip
        elif (previous_size, previous_root) != (prev_size or 0, prev_root or EMPTY_ROOT.hex()):
            findings.append(Finding(
                Problem.CHECKPOINT_CHAIN_BROKEN,
                f"checkpoint #{number} does not name checkpoint #{expected - 1} before it"
                if prev_number else f"checkpoint #{number} names a predecessor, but is the first",
                checkpoint=number,
            ))  # fmt: skip
        if size < previous_size or (prev_size is not None and size < prev_size):
            findings.append(Finding(
                Problem.CHECKPOINT_SIZE_BACKWARDS,
                f"checkpoint #{number} signs a tree of {size} events, smaller than the "
                f"{max(previous_size, prev_size or 0)} before it",
                checkpoint=number,
            ))  # fmt: skip
    return findings


def _copy_findings(
    organization_id: uuid.UUID, copy: AnchorCopy, held: dict[int, AuditCheckpoint] | None = None
) -> list[Finding]:
    """Every checkpoint kept outside the database is still in it, unchanged."""
    anchors = copy.anchors()
    if not anchors:
        return []
    if held is None:
        numbers = [anchor.number for anchor in anchors]
        held = {
            c.number: c
            for c in AuditCheckpoint.objects.filter(
                organization_id=organization_id, number__in=numbers
            )
        }
    findings: list[Finding] = []
    for anchor in anchors:
        row = held.get(anchor.number)
        if row is None:
            findings.append(Finding(
                Problem.CHECKPOINT_MISSING,
                f"checkpoint #{anchor.number} (a tree of {anchor.tree_size} events, signed "
                f"{anchor.published_at}) is held outside the database ({copy.store} store) but "
                "is no longer in it",
                checkpoint=anchor.number,
            ))  # fmt: skip
        elif not anchor.matches(row):
            findings.append(Finding(
                Problem.CHECKPOINT_COPY_MISMATCH,
                f"checkpoint #{anchor.number} in the database is not the one held outside it "
                f"({copy.store} store): tree size {row.tree_size} and root {row.root_hash[:16]}..."
                f" against {anchor.tree_size} and {anchor.root_hash[:16]}...",
                checkpoint=anchor.number,
            ))  # fmt: skip
    return findings


def _published_keys() -> dict[str, JSONValue]:
    return {kid: jwk for kid, jwk in SigningKey.objects.values_list("kid", "public_jwk")}


def _signature_findings(
    checkpoints: Iterable[AuditCheckpoint], keys: dict[str, JSONValue]
) -> list[Finding]:
    findings: list[Finding] = []
    for checkpoint in checkpoints:
        problem = checkpoint_signature_problem(checkpoint, keys)
        if problem is not None:
            findings.append(Finding(
                Problem.CHECKPOINT_SIGNATURE, f"checkpoint #{checkpoint.number}: {problem}",
                checkpoint=checkpoint.number,
            ))  # fmt: skip
    return findings


def _sampled(rows: Sequence[tuple[int, int, str, datetime]], extra: Iterable[int]) -> set[int]:
    """Checkpoint numbers whose signature is verified: the newest, the first of each UTC day,
    and ``extra``."""
    numbers = set(extra)
    days: set[object] = set()
    for number, _, _, published in rows:  # in number order
        day = published.date()
        if day not in days:
            days.add(day)
            numbers.add(number)
    if rows:
        numbers.add(rows[-1][0])
    return numbers


# --- the log against the signed roots --------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A root someone signed: a checkpoint row, or its copy outside the database."""

    size: int
    root_hash: str
    number: int
    published_at: datetime
    where: str  # "checkpoint" or "copy"

    @property
    def label(self) -> str:
        if self.where == "checkpoint":
            return f"checkpoint #{self.number}"
        return f"checkpoint #{self.number} (as held outside the database)"


def _localized(
    organization_id: uuid.UUID, bad: Signed, last_good: int, *, first_differing: bool = True
) -> Finding:
    """The first event between ``last_good`` (a size whose root still matches) and
    ``bad.size`` whose leaf is not the signed tree's. The stored tree supplies the signed
    leaves once its nodes are shown to give ``bad``'s signed root. ``first_differing``:
    ``last_good`` is known to match (a full walk), so the event found is the first that
    differs anywhere in the log."""
    start, end = last_good, bad.size
    stored = tree_size(organization_id=organization_id)
    events = list(
        AuditEvent.objects.filter(
            organization_id=organization_id, sequence__gt=start, sequence__lte=end
        )
        .order_by("sequence")
        .values_list("sequence", "id", "hash", "occurred_at")
    )
    trusted = stored >= end and root_hash(organization_id=organization_id, size=end).hex() == (
        bad.root_hash
    )
    if trusted:
        leaves = stored_leaves(organization_id=organization_id, start=start, end=end)
        for sequence, event_id, chained, occurred in events:
            try:
                leaf: bytes | None = leaf_hash(bytes.fromhex(chained))
            except ValueError:
                leaf = None
            if leaf != leaves.get(sequence - 1):
                if occurred > bad.published_at:
                    return Finding(
                        Problem.SEQUENCE_REUSED,
                        f"sequence {sequence} was reused: the event there was recorded at "
                        f"{occurred.isoformat()}, after {bad.label} (signed "
                        f"{bad.published_at.isoformat()}) had covered sequence {sequence}",
                        sequence=sequence, event_id=event_id, checkpoint=bad.number,
                    )  # fmt: skip
                extent = (
                    "the first event that differs; the log was rewritten from there"
                    if first_differing
                    else "the log was rewritten up to here; a full verification names the "
                    "first event that differs"
                )
                return Finding(
                    Problem.REWRITTEN,
                    f"event {sequence} is not the event {bad.label} signed, with its "
                    f"hash chain recomputed ({extent})",
                    sequence=sequence, event_id=event_id, checkpoint=bad.number,
                )  # fmt: skip
    first_id = events[0][1] if events else None
    return Finding(
        Problem.REWRITTEN,
        f"the log no longer gives the root that {bad.label} signed over {end} events: "
        f"some event from sequence {start + 1} to {end} was rewritten, and the stored tree "
        "was altered too, so the first cannot be narrowed further",
        sequence=start + 1, event_id=first_id, checkpoint=bad.number,
    )  # fmt: skip


def _root_findings(
    organization_id: uuid.UUID, signed: Sequence[Signed], roots: dict[int, bytes]
) -> tuple[list[Finding], Signed | None]:
    """Compare every signed root the walk reached with the log's; localize the first that
    differs (bracketed by tree size)."""
    last_good = 0
    for entry in sorted(signed, key=lambda s: (s.size, s.where != "checkpoint", s.number)):
        root = roots.get(entry.size)
        if root is None:
            break  # the walk stopped before this size: its own finding says why
        if root.hex() == entry.root_hash:
            last_good = entry.size
            continue
        return [_localized(organization_id, entry, last_good)], entry
    return [], None


def audit_integrity_verify(
    *, organization_id: uuid.UUID, first: int = 1, last: int | None = None
) -> IntegrityReport:
    """Verify the organization's log (or the range ``first``..``last`` of its chain) against
    its signed checkpoints and their copies outside the database; see the module. Raises
    :class:`~agentidp.secrets.SecretStoreError` when the copies cannot be read."""
    complete = first <= 1 and last is None
    copy = anchor_read(organization_id)
    rows = list(
        AuditCheckpoint.objects.filter(organization_id=organization_id)
        .order_by("number")
        .values_list("number", "tree_size", "root_hash", "published_at")
    )
    signed = [
        Signed(size, root, number, published, "checkpoint")
        for number, size, root, published in rows
    ]
    signed += [
        Signed(a.tree_size, a.root_hash, a.number, datetime.fromisoformat(a.published_at), "copy")
        for a in copy.anchors()
    ]
    chain = audit_chain_verify(
        organization_id=organization_id, first=first, last=last,
        roots_at=[s.size for s in signed] if complete else (),
    )  # fmt: skip
    findings: list[Finding] = []
    if not chain.valid:
        findings.append(Finding(
            chain.code, chain.reason, sequence=chain.first_invalid_sequence,
            event_id=chain.first_invalid_event_id,
        ))  # fmt: skip
    newest = max(signed, key=lambda s: (s.size, s.number), default=None)
    if newest is not None and newest.size > chain.last_sequence:
        findings.append(_truncated(chain.last_sequence, newest))
    findings += _structure_findings(organization_id)
    mismatch: Signed | None = None
    if complete:
        found, mismatch = _root_findings(organization_id, signed, chain.roots)
        findings += found
        latest = rows[-1] if rows else None
        if latest is not None and latest[1] <= tree_size(organization_id=organization_id):
            stored = root_hash(organization_id=organization_id, size=latest[1]).hex()
            if stored != latest[2] and not found:
                findings.append(_tree_altered(latest[0], latest[1]))
    anchored = {anchor.number for anchor in copy.anchors()}
    suspects = (
        {mismatch.number} if mismatch is not None and mismatch.where == "checkpoint" else set()
    )
    sample = _sampled(rows, anchored | suspects)
    checkpoints = {
        c.number: c
        for c in AuditCheckpoint.objects.filter(organization_id=organization_id, number__in=sample)
    }
    findings += _copy_findings(organization_id, copy, checkpoints)
    findings += _signature_findings(checkpoints.values(), _published_keys())
    checks: dict[str, JSONValue] = {
        "checkpoints": len(rows),
        "roots_compared": len({s.size for s in signed if s.size in chain.roots}),
        "signatures_verified": len(checkpoints),
        "copy": {
            "store": copy.store,
            "anchors": len(copy.anchors()),
            "latest_number": copy.latest.number if copy.latest else None,
        },
        "newest_checkpoint": {"number": rows[-1][0], "tree_size": rows[-1][1]} if rows else None,
    }
    return IntegrityReport(
        organization_id=organization_id, findings=_ordered(findings), complete=complete,
        events_checked=chain.events_checked, head_sequence=chain.head_sequence, first=first,
        last=last, checks=checks,
    )  # fmt: skip


def _truncated(log_size: int, newest: Signed) -> Finding:
    return Finding(
        Problem.TRUNCATED,
        f"the log holds {log_size} events, but {newest.label} signed a tree of "
        f"{newest.size}: events {log_size + 1} to {newest.size} are gone",
        sequence=log_size + 1, checkpoint=newest.number,
    )  # fmt: skip


def _tree_altered(number: int, size: int) -> Finding:
    return Finding(
        Problem.TREE_ALTERED,
        f"the stored Merkle tree no longer gives the root checkpoint #{number} signed over "
        f"{size} events (inclusion proofs from it would not verify)",
        checkpoint=number,
    )  # fmt: skip


def audit_integrity_quick_check(
    *, organization_id: uuid.UUID, copy: AnchorCopy | None
) -> list[Finding]:
    """What can be checked in a few indexed reads: the checkpoints' chain, the newest
    checkpoint against the log's length, the chain head, the stored tree and the event at the
    newest checkpoint's last leaf (a rewrite that recomputed the chain changed it), and the
    copy outside the database (``None``: it could not be read). Finds every truncation,
    deletion and rewrite of the log up to the newest checkpoint; only an edit that left the
    chain broken needs the full walk to be seen."""
    findings = _structure_findings(organization_id)
    if copy is not None:
        findings += _copy_findings(organization_id, copy)
    head = AuditChainHead.objects.filter(organization_id=organization_id).first()
    present = AuditEvent.objects.filter(organization_id=organization_id).order_by("-sequence")
    log_size = int(present.values_list("sequence", flat=True).first() or 0)
    if head is not None and head.sequence != log_size:
        findings.append(Finding(
            ChainBreak.MISSING_BEFORE_HEAD,
            f"the chain head says {head.sequence} events, the log holds {log_size}",
            sequence=min(head.sequence, log_size) + 1,
        ))  # fmt: skip
    latest = checkpoint_latest(organization_id=organization_id)
    newest = _newest_signed(latest, copy)
    if newest is not None and newest.size > log_size:
        findings.append(_truncated(log_size, newest))
    if latest is None or latest.tree_size == 0:
        return _ordered(findings)
    size = latest.tree_size
    stored_size = tree_size(organization_id=organization_id)
    if stored_size < size or root_hash(organization_id=organization_id, size=size).hex() != (
        latest.root_hash
    ):
        findings.append(_tree_altered(latest.number, size))
        return _ordered(findings)
    event = AuditEvent.objects.filter(organization_id=organization_id, sequence=size).first()
    if event is not None:
        boundary = Signed(size, latest.root_hash, latest.number, latest.published_at, "checkpoint")
        leaves = stored_leaves(organization_id=organization_id, start=size - 1, end=size)
        try:
            leaf: bytes | None = leaf_hash(bytes.fromhex(event.hash))
        except ValueError:
            leaf = None
        if leaf != leaves.get(size - 1):
            findings.append(_localized(organization_id, boundary, size - 1, first_differing=False))
    return _ordered(findings)


def _newest_signed(latest: AuditCheckpoint | None, copy: AnchorCopy | None) -> Signed | None:
    candidates: list[Signed] = []
    if latest is not None:
        candidates.append(
            Signed(
                latest.tree_size, latest.root_hash, latest.number, latest.published_at, "checkpoint"
            )
        )
    for anchor in copy.anchors() if copy is not None else []:
        published = datetime.fromisoformat(anchor.published_at)
        candidates.append(
            Signed(anchor.tree_size, anchor.root_hash, anchor.number, published, "copy")
        )
    return max(candidates, key=lambda s: (s.size, s.number), default=None)


# --- recording what was found ----------------------------------------------------------------


def _run_record(
    organization_id: uuid.UUID, started: datetime, *, failed: bool, detail: dict[str, JSONValue]
) -> None:
    with transaction.atomic():
        JobRun.objects.create(
            job=JOB, organization_ref=organization_id, started_at=started,
            finished_at=timezone.now(),
            outcome=JobOutcome.FAILURE if failed else JobOutcome.SUCCESS, detail=detail,
        )  # fmt: skip


def audit_integrity_failure_record(
    *, organization_id: uuid.UUID, report: IntegrityReport, actor: Principal, source: str
) -> None:
    """A failed verification, whoever ran it: the error log naming the organization, the
    event and the reason, the metric, and ``audit.integrity_failed``, in the caller's
    transaction. The event goes on the platform's chain, not on the log in question (webhooks
    deliver it to the organization's subscriptions: ``webhooks.choices.ORGANIZATION_NOTICES``),
    through the platform context (``audit:integrity-failed``)."""
    primary = report.primary
    assert primary is not None  # noqa: S101 - only failures are recorded here
    INTEGRITY_FAILURES.labels(code=primary.code).inc()
    logger.error(
        "audit chain broken: organization %s, event %s (sequence %s): %s [%s, found by %s]",
        organization_id, primary.event_id or "none", primary.sequence, primary.reason,
        primary.code, source,
        extra={
            "organization_id": str(organization_id), "event_id": str(primary.event_id or ""),
            "sequence": primary.sequence, "reason": primary.reason, "code": primary.code,
            "source": source,
        },
    )  # fmt: skip
    with platform_context(reason="audit:integrity-failed", actor=actor):
        event_record(
            organization_id=SYSTEM_ORGANIZATION_ID, actor=actor,
            action=EventType.AUDIT_INTEGRITY_FAILED, subject_type="organization",
            subject_id=str(organization_id),
            data={
                "organization_id": str(organization_id), **primary.as_document(),
                "source": source, "findings": len(report.findings),
            },
        )  # fmt: skip


def audit_integrity_verify_recorded(
    *,
    organization_id: uuid.UUID,
    actor: Principal,
    source: str,
    first: int = 1,
    last: int | None = None,
) -> IntegrityReport:
    """:func:`audit_integrity_verify`, recorded: every complete verification and every
    failure is an ``audit-chain-verify`` run (``detail.source`` says who ran it: the beat job,
    the endpoint, the command, the report), and a failure is recorded as
    :func:`audit_integrity_failure_record` says. Run in the organization's context."""
    started = timezone.now()
    report = audit_integrity_verify(organization_id=organization_id, first=first, last=last)
    CHAIN_VERIFICATIONS.labels(result="valid" if report.verified else "invalid").inc()
    if report.complete or not report.verified:
        detail = {**report.as_document(), "source": source}
        _run_record(organization_id, started, failed=not report.verified, detail=detail)
    if not report.verified:
        audit_integrity_failure_record(
            organization_id=organization_id, report=report, actor=actor, source=source
        )
    return report


def audit_integrity_run_failed(
    organization_id: uuid.UUID, *, source: str, error: Exception
) -> None:
    """A verification that could not run (the secret store or the database failed under it):
    a failed run naming the error (never a secret), in its own transaction."""
    _run_record(
        organization_id, timezone.now(), failed=True,
        detail={"source": source, "error": f"{type(error).__name__}: {str(error)[:300]}"},
    )  # fmt: skip


# --- the checkpoint job ----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRun:
    """One run of the checkpoint job for one organization: the checkpoint it signed (every run
    signs one, grown or not, so its freshness says the job runs), or the integrity failure
    that stopped it. ``unchanged_since`` is the number of the checkpoint before it when the log
    had nothing new since that one (beyond that checkpoint's own record)."""

    checkpoint: AuditCheckpoint | None
    created: bool = False
    report: IntegrityReport | None = None
    unchanged_since: int | None = None

    def as_document(self) -> dict[str, JSONValue]:
        if self.checkpoint is None:
            assert self.report is not None  # noqa: S101 - one or the other
            return {"published": False, "integrity": self.report.as_document()}
        return {
            "published": self.created, "number": self.checkpoint.number,
            "tree_size": self.checkpoint.tree_size, "root_hash": self.checkpoint.root_hash,
            "grown": self.unchanged_since is None,
            "summary": (
                f"checkpoint {self.checkpoint.number} signed over {self.checkpoint.tree_size}"
                " events; "
                + (f"no change since checkpoint {self.unchanged_since}"
                   if self.unchanged_since is not None else "the log grew")
            ),
        }  # fmt: skip


def _only_its_own_record(organization_id: uuid.UUID, latest: AuditCheckpoint, size: int) -> bool:
    """Whether all the tree gained since ``latest`` is ``latest``'s own audit.checkpoint event:
    nothing happened since it (an idle log would otherwise grow by a checkpoint a run)."""
    return size == latest.tree_size + 1 and AuditEvent.objects.filter(
        organization_id=organization_id, sequence=size, action=EventType.AUDIT_CHECKPOINT,
        subject_id=str(latest.id),
    ).exists()  # fmt: skip


@transaction.atomic
def checkpoint_publish(
    *, organization_id: uuid.UUID, actor: Principal, limit: int | None = EXTEND_PER_RUN
) -> CheckpointRun:
    """Check the log (:func:`audit_integrity_quick_check`), extend the organization's tree
    by at most ``limit`` events (a backlog is caught up over the next runs) and sign the next
    checkpoint of it, recorded as ``audit.checkpoint`` (the event carries the signed
    checkpoint out through webhooks and streams) and copied to the secret store after commit.
    A log that fails the check is not signed over: the failure is recorded instead."""
    try:
        copy: AnchorCopy | None = anchor_read(organization_id)
    except SecretStoreError as exc:
        logger.warning("checkpoint copies of %s cannot be read: %s", organization_id, exc)
        copy = None
    findings = audit_integrity_quick_check(organization_id=organization_id, copy=copy)
    if not findings:
        try:
            size = merkle_extend(organization_id=organization_id, limit=limit).size
        except MerkleGap as gap:
            findings = [Finding(ChainBreak.GAP, str(gap))]
    if findings:
        report = IntegrityReport(organization_id=organization_id, findings=findings, complete=False)
        _run_record(
            organization_id, timezone.now(), failed=True,
            detail={**report.as_document(), "source": f"{actor.id} (before signing)"},
        )  # fmt: skip
        audit_integrity_failure_record(
            organization_id=organization_id, report=report, actor=actor, source=actor.id
        )
        return CheckpointRun(checkpoint=None, report=report)
    latest = checkpoint_latest(organization_id=organization_id)
    unchanged = latest is not None and (
        latest.tree_size == size or _only_its_own_record(organization_id, latest, size)
    )
    checkpoint = checkpoint_sign(organization_id=organization_id, size=size, previous=latest)
    if not unchanged:
        # A checkpoint over new events goes out with them, as an event of its own; one over an
        # unchanged log is kept here and in the copy outside the database, and adds nothing
        # to the log, so an idle log stays the size it is.
        event_record(
            organization_id=organization_id, actor=actor, action=EventType.AUDIT_CHECKPOINT,
            subject_type="audit_checkpoint", subject_id=str(checkpoint.id),
            data={
                "number": checkpoint.number, "tree_size": checkpoint.tree_size,
                "root_hash": checkpoint.root_hash,
                "previous_tree_size": checkpoint.previous_tree_size,
                "previous_root_hash": checkpoint.previous_root_hash,
                "published_at": checkpoint.published_at.isoformat(), "kid": checkpoint.kid,
                "signature": checkpoint.signature,
            },
        )  # fmt: skip
    anchor = Anchor.of(checkpoint)
    if copy is None or copy.latest is None or copy.latest.number < checkpoint.number:
        transaction.on_commit(partial(anchor_publish_after_commit, organization_id, anchor))
    return CheckpointRun(
        checkpoint=checkpoint, created=True,
        unchanged_since=latest.number if unchanged and latest is not None else None,
    )  # fmt: skip
