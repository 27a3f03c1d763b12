"""Signed checkpoints of each organization's audit Merkle tree, and the proofs an auditor
verifies against them (RFC 9162 inclusion and consistency proofs).

A checkpoint is a compact JWS (``typ: agentidp-checkpoint+jwt``) signed with the deployment's
current signing key, whose ``kid`` is in the JWKS and among the instance DID's verification
methods; the public key is kept with the checkpoint, so a checkpoint stays verifiable after
that key has rotated out of the JWKS. Its claims: ``iss``, ``organization_id``,
``tree_size``, ``root_hash`` (hex), ``hash_alg`` (``SHA-256``), ``iat``.
"""

import base64
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue, NotFound, ValidationFailed
from compliance.merkle import (
    EMPTY_ROOT,
    consistency_ranges,
    hashes_of,
    inclusion_ranges,
    leaf_hash,
    merkle_extend,
    root_hash,
)
from compliance.models import AuditCheckpoint, AuditEvent
from oidc.keys import signing_key_current
from oidc.models import SigningKey
from oidc.tokens import jws_sign

CHECKPOINT_TYPE = "agentidp-checkpoint+jwt"
EXTEND_PER_RUN = 200_000
CHECKPOINTS_PUBLISHED = Counter(
    "agentidp_audit_checkpoints_published_total", "Audit checkpoints signed and stored."
)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@transaction.atomic
def checkpoint_publish(
    *, organization_id: uuid.UUID, limit: int | None = EXTEND_PER_RUN
) -> AuditCheckpoint:
    """Extend the organization's tree (by at most ``limit`` events, so one run's transaction
    stays short; a backlog is caught up over the next runs) and sign a checkpoint of it (the
    latest one again when nothing was appended since)."""
    size = merkle_extend(organization_id=organization_id, limit=limit).size
    latest = (
        AuditCheckpoint.objects.filter(organization_id=organization_id)
        .order_by("-tree_size")
        .first()
    )
    if latest is not None and latest.tree_size == size:
        return latest
    root = root_hash(organization_id=organization_id, size=size) if size else EMPTY_ROOT
    now = timezone.now()
    signing = signing_key_current()
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "organization_id": str(organization_id),
        "tree_size": size,
        "root_hash": root.hex(),
        "hash_alg": "SHA-256",
        "iat": int(now.timestamp()),
    }
    public = SigningKey.objects.values_list("public_jwk", flat=True).get(kid=signing.kid)
    checkpoint = AuditCheckpoint.objects.create(
        organization_id=organization_id, tree_size=size, root_hash=root.hex(), published_at=now,
        signature=jws_sign(claims, signing, typ=CHECKPOINT_TYPE), kid=signing.kid,
        public_jwk=public,
    )  # fmt: skip
    transaction.on_commit(CHECKPOINTS_PUBLISHED.inc)
    return checkpoint


def checkpoint_get(*, organization_id: uuid.UUID, tree_size: int | None) -> AuditCheckpoint:
    """The checkpoint of ``tree_size`` (the latest when None); 404 when there is none."""
    checkpoints = AuditCheckpoint.objects.filter(organization_id=organization_id)
    if tree_size is not None:
        checkpoints = checkpoints.filter(tree_size=tree_size)
    found = checkpoints.order_by("-tree_size").first()
    if found is None:
        raise NotFound(
            "No such checkpoint." if tree_size is not None else "No checkpoint has been published."
        )
    return found


@dataclass(frozen=True)
class InclusionProof:
    event: AuditEvent
    leaf_index: int
    leaf_hash: bytes
    path: list[bytes]
    checkpoint: AuditCheckpoint


def inclusion_proof(
    *, organization_id: uuid.UUID, event_id: uuid.UUID, tree_size: int | None = None
) -> InclusionProof:
    """The audit path of one event in a checkpoint's tree (the latest by default)."""
    event = AuditEvent.objects.filter(organization_id=organization_id, id=event_id).first()
    if event is None:
        raise NotFound("No such audit event.")
    checkpoint = checkpoint_get(organization_id=organization_id, tree_size=tree_size)
    index = event.sequence - 1
    if index >= checkpoint.tree_size:
        raise ValidationFailed(
            "The event is newer than the checkpoint; ask again after the next one.",
            errors={
                "tree_size": [f"The event is leaf {index}; the tree has {checkpoint.tree_size}."]
            },
        )
    path = hashes_of(
        organization_id=organization_id, ranges=inclusion_ranges(index, checkpoint.tree_size)
    )
    return InclusionProof(
        event=event, leaf_index=index, leaf_hash=leaf_hash(bytes.fromhex(event.hash)),
        path=path, checkpoint=checkpoint,
    )  # fmt: skip


@dataclass(frozen=True)
class ConsistencyProof:
    first: AuditCheckpoint
    second: AuditCheckpoint
    path: list[bytes]


def consistency_proof(*, organization_id: uuid.UUID, first: int, second: int) -> ConsistencyProof:
    """That the tree of checkpoint ``first`` is a prefix of the tree of checkpoint ``second``."""
    if first > second:
        raise ValidationFailed(
            "first must not be larger than second.",
            errors={"first": ["A tree size no larger than second."]},
        )
    older = checkpoint_get(organization_id=organization_id, tree_size=first)
    newer = checkpoint_get(organization_id=organization_id, tree_size=second)
    path = hashes_of(organization_id=organization_id, ranges=consistency_ranges(first, second))
    return ConsistencyProof(first=older, second=newer, path=path)


def checkpoint_document(checkpoint: AuditCheckpoint) -> dict[str, JSONValue]:
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash,
        "published_at": checkpoint.published_at.isoformat(),
        "signature": checkpoint.signature,
        "kid": checkpoint.kid,
        "public_jwk": checkpoint.public_jwk,
    }
