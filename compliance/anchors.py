"""The copy of each organization's signed checkpoints that lives outside the database.

Whoever runs the database can rewrite the audit log, its Merkle tree and its checkpoint rows
consistently; they cannot rewrite what left the database. Two copies leave as each checkpoint
is signed: the ``audit.checkpoint`` event (webhooks and the event streams, through the outbox)
and an *anchor* document in the secret store (Vault's KV v2 in production; the development
store under ``make run``), written after the checkpoint commits:

* ``latest``: the newest checkpoint (number, tree size, root, signature, when);
* ``daily``: the first checkpoint of each UTC day, for ``AGENTIDP_AUDIT_ANCHOR_DAYS`` days.

Every verification reads the anchors and requires each to be a checkpoint the database still
holds, unchanged, whose root the log itself still produces (:mod:`compliance.integrity`): so
deleting checkpoint rows, or rewriting them with the log, is detected. A write that fails (the
store is down) is caught up by the next checkpoint run: the copy may lag, never lead.
"""

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from prometheus_client import Counter

from agentidp.secrets import SecretNotFound, SecretStoreError, VaultSecretStore, secret_store
from compliance.models import AuditCheckpoint

logger = logging.getLogger("agentidp.audit")

ANCHOR_WRITES = Counter(
    "agentidp_audit_anchor_writes_total",
    "Checkpoint copies written to the secret store (written, current, failed).",
    ["result"],
)


def anchor_path(organization_id: uuid.UUID) -> str:
    return f"orgs/{organization_id}/audit/checkpoints"


@dataclass(frozen=True)
class Anchor:
    """One checkpoint as the copy outside the database remembers it."""

    number: int
    tree_size: int
    root_hash: str
    signature: str
    published_at: str

    @classmethod
    def of(cls, checkpoint: AuditCheckpoint) -> "Anchor":
        return cls(
            number=int(checkpoint.number), tree_size=int(checkpoint.tree_size),
            root_hash=checkpoint.root_hash, signature=checkpoint.signature,
            published_at=checkpoint.published_at.isoformat(),
        )  # fmt: skip

    def matches(self, checkpoint: AuditCheckpoint) -> bool:
        return (self.tree_size, self.root_hash, self.signature) == (
            checkpoint.tree_size, checkpoint.root_hash, checkpoint.signature,
        )  # fmt: skip


@dataclass(frozen=True)
class AnchorCopy:
    """What the secret store holds for one organization (nothing yet: both empty)."""

    latest: Anchor | None = None
    daily: dict[str, Anchor] = field(default_factory=dict)
    store: str = ""

    def anchors(self) -> list[Anchor]:
        """Every anchored checkpoint once, oldest first."""
        found = {anchor.number: anchor for anchor in self.daily.values()}
        if self.latest is not None:
            found[self.latest.number] = self.latest
        return [found[number] for number in sorted(found)]


def _store_name() -> str:
    return "vault" if isinstance(secret_store(), VaultSecretStore) else "local"


def _anchor(value: object) -> Anchor | None:
    if not isinstance(value, dict):
        return None
    try:
        return Anchor(
            number=int(value["number"]), tree_size=int(value["tree_size"]),
            root_hash=str(value["root_hash"]), signature=str(value["signature"]),
            published_at=str(value["published_at"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None


def anchor_read(organization_id: uuid.UUID) -> AnchorCopy:
    """The organization's anchors; an empty copy when none was ever written. Raises
    :class:`~agentidp.secrets.SecretStoreError` when the store cannot be read."""
    try:
        stored = secret_store().read(anchor_path(organization_id))
    except SecretNotFound:
        return AnchorCopy(store=_store_name())
    try:
        latest = _anchor(json.loads(stored.get("latest", "null")))
        daily_raw = json.loads(stored.get("daily", "{}"))
    except ValueError as exc:
        raise SecretStoreError("the checkpoint anchor document is not JSON") from exc
    daily = {}
    if isinstance(daily_raw, dict):
        for day, value in daily_raw.items():
            anchor = _anchor(value)
            if anchor is not None:
                daily[str(day)] = anchor
    return AnchorCopy(latest=latest, daily=daily, store=_store_name())


def anchor_publish(organization_id: uuid.UUID, anchor: Anchor) -> bool:
    """Record ``anchor`` as the newest checkpoint (and the day's first, if it is) unless the
    copy already holds it or a newer one; prune days past ``AUDIT_ANCHOR_DAYS``. True when
    something was written."""
    copy = anchor_read(organization_id)
    day = datetime.fromisoformat(anchor.published_at).date().isoformat()
    current = copy.latest is not None and copy.latest.number >= anchor.number
    if current and day in copy.daily:
        return False
    latest = copy.latest if current else anchor
    daily = dict(copy.daily)
    daily.setdefault(day, anchor)
    keep_from = timezone.now() - timedelta(days=int(settings.AGENTIDP["AUDIT_ANCHOR_DAYS"]))
    daily = {d: a for d, a in daily.items() if d >= keep_from.date().isoformat()}
    secret_store().write(
        anchor_path(organization_id),
        {
            "organization_id": str(organization_id),
            "latest": json.dumps(asdict(latest) if latest else None),
            "daily": json.dumps({d: asdict(a) for d, a in sorted(daily.items())}),
        },
    )
    return True


def anchor_publish_after_commit(organization_id: uuid.UUID, anchor: Anchor) -> None:
    """:func:`anchor_publish` from ``on_commit``: a store that is down costs a warning and a
    metric, and the next checkpoint run writes the copy."""
    try:
        written = anchor_publish(organization_id, anchor)
    except SecretStoreError as exc:
        ANCHOR_WRITES.labels(result="failed").inc()
        logger.warning(
            "could not copy audit checkpoint #%s of organization %s to the secret store: %s",
            anchor.number, organization_id, exc,
        )  # fmt: skip
        return
    ANCHOR_WRITES.labels(result="written" if written else "current").inc()
