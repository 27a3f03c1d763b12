"""The audit log: one hash chain of events per organization."""

import uuid
from typing import TYPE_CHECKING

from django.db import models

from agentidp.models import OrgOwnedModel

if TYPE_CHECKING:
    from organizations.models import Organization

GENESIS_HASH = "0" * 64


def organization_key() -> "models.ForeignKey[Organization, Organization]":
    """The owning organization, without a single-column index (each table's unique constraint
    or composite index starts with it)."""
    return models.ForeignKey(
        "organizations.Organization",
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        db_index=False,
    )


class AuditEvent(OrgOwnedModel):
    """One recorded domain event; append-only, chained to its predecessor by hash."""

    retained_after_organization_deletion = True

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No single-column index: the composite indexes below all start with the organization.
    organization = organization_key()
    sequence = models.PositiveBigIntegerField()
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=200)
    action = models.CharField(max_length=100)
    outcome = models.CharField(max_length=20, default="success")
    subject_type = models.CharField(max_length=50)
    subject_id = models.CharField(max_length=200)
    data = models.JSONField(default=dict)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "sequence"], name="%(app_label)s_%(class)s_unique_sequence"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "occurred_at"], name="compliance_audit_org_time"),
            models.Index(fields=["organization", "action"], name="compliance_audit_org_action"),
            models.Index(
                fields=["organization", "subject_type", "subject_id"],
                name="compliance_audit_org_subject",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action}"


class AuditChainHead(OrgOwnedModel):
    """The newest link of an organization's chain; its row lock serializes writers."""

    retained_after_organization_deletion = True

    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization"], name="%(app_label)s_%(class)s_unique_organization"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}@{self.sequence}"


class AuditMerkleNode(OrgOwnedModel):
    """One perfect subtree of an organization's RFC 9162 Merkle tree over its audit events:
    level ``level`` node ``index`` covers events ``index * 2**level`` to ``(index + 1) *
    2**level - 1`` (leaf ``i`` is the event of sequence ``i + 1``). Append-only."""

    retained_after_organization_deletion = True

    id = models.BigAutoField(primary_key=True)
    organization = organization_key()  # its unique constraint starts with it
    level = models.PositiveSmallIntegerField()
    index = models.PositiveBigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "level", "index"], name="%(app_label)s_%(class)s_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.level}/{self.index}"


class AuditCheckpoint(OrgOwnedModel):
    """A signed statement of an organization's Merkle tree: its size and root hash at a moment,
    signed by the deployment's key (a compact JWS), chained to the checkpoint before it (its
    size and root are in the signed claims). Append-only; a copy of each leaves the database
    as it is signed (the ``audit.checkpoint`` event, and the secret store's anchor)."""

    retained_after_organization_deletion = True

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = organization_key()  # its unique constraint starts with it
    number = models.PositiveBigIntegerField(
        help_text="Its place in the organization's chain of checkpoints: 1, 2, 3, ..."
    )
    tree_size = models.PositiveBigIntegerField()
    root_hash = models.CharField(max_length=64, help_text="Hex SHA-256 of the tree's root.")
    previous_tree_size = models.PositiveBigIntegerField(
        default=0, help_text="The tree size of the checkpoint before it (0 for the first)."
    )
    previous_root_hash = models.CharField(
        max_length=64, help_text="The root hash of the checkpoint before it (the empty tree's "
        "for the first).",
    )  # fmt: skip
    published_at = models.DateTimeField()
    signature = models.TextField(help_text="Compact JWS over the checkpoint, by the deployment.")
    kid = models.CharField(max_length=200)
    public_jwk = models.JSONField(help_text="The public key that verifies the signature.")

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "number"], name="%(app_label)s_%(class)s_number_once"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "tree_size"], name="compliance_checkpoint_size"),
        ]

    def __str__(self) -> str:
        return f"#{self.number} {self.organization_id}@{self.tree_size}"


class DataKey(OrgOwnedModel):
    """One version of an organization's data key (AES-256), stored only wrapped by the
    key-encryption key (Vault Transit or the local development key): see
    :mod:`compliance.encryption`. The newest version encrypts; every version decrypts."""

    organization = organization_key()
    version = models.PositiveIntegerField()
    wrapped = models.TextField(help_text="The key wrapped by the KEK; its version leads it.")
    created_at = models.DateTimeField()
    rewrapped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "version"], name="%(app_label)s_%(class)s_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"data key v{self.version}"


class JobOutcome(models.TextChoices):
    SUCCESS = "success", "success"
    FAILURE = "failure", "failure"


class JobRun(models.Model):
    """One run of a scheduled compliance job (rotation, chain verification, checkpoints,
    rewrap, outbox health) and its outcome: the evidence the controls and reports cite.

    Platform-wide (staff read it in the admin); a run for one organization names it in
    ``organization_ref`` (not a foreign key: the row outlives nothing and scopes nothing)."""

    id = models.BigAutoField(primary_key=True)
    job = models.CharField(max_length=100)
    organization_ref = models.UUIDField(null=True, blank=True, verbose_name="organization")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=JobOutcome.choices)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["job", "-started_at"], name="compliance_jobrun_job_time")]

    def __str__(self) -> str:
        return f"{self.job} {self.outcome} at {self.started_at:%Y-%m-%d %H:%M:%S}"
