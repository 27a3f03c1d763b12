"""Signed checkpoints of each organization's audit Merkle tree, and the proofs an auditor
verifies against them (RFC 9162 inclusion and consistency proofs).

A checkpoint is a compact JWS (``typ: agentidp-checkpoint+jwt``) signed with the deployment's
current signing key, whose ``kid`` is in the JWKS and among the instance DID's verification
methods; the public key is kept with the checkpoint, so a checkpoint stays verifiable after
that key has rotated out of the JWKS. Its claims: ``iss``, ``organization_id``, ``number``
(1, 2, 3, ... per organization), ``tree_size``, ``root_hash`` (hex), ``prev_tree_size`` and
``prev_root_hash`` (the checkpoint before it: checkpoints form a chain), ``hash_alg``
(``SHA-256``), ``iat``. Signing is :func:`checkpoint_sign`; the job that decides when to sign
(after checking the log) is :func:`compliance.integrity.checkpoint_publish`.
"""

import base64
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter

from agentidp.conf import agentidp_settings
from agentidp.errors import Conflict, JSONValue, NotFound, ValidationFailed
from compliance.merkle import (
    EMPTY_ROOT,
    consistency_ranges,
    hashes_of,
    inclusion_ranges,
    leaf_hash,
    root_hash,
)
from compliance.models import AuditCheckpoint, AuditEvent
from oidc.keys import signing_key_current
from oidc.models import SigningKey
from oidc.tokens import InvalidToken, jws_sign, jws_verify

CHECKPOINT_TYPE = "agentidp-checkpoint+jwt"
CHECKPOINTS_PUBLISHED = Counter(
    "agentidp_audit_checkpoints_published_total", "Audit checkpoints signed and stored."
)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def checkpoint_latest(*, organization_id: uuid.UUID) -> AuditCheckpoint | None:
    """The newest checkpoint (highest number), if any."""
    return (
        AuditCheckpoint.objects.filter(organization_id=organization_id).order_by("-number").first()
    )


def checkpoint_sign(
    *, organization_id: uuid.UUID, size: int, previous: AuditCheckpoint | None
) -> AuditCheckpoint:
    """Sign and store the checkpoint after ``previous`` of a tree of ``size`` leaves (the
    stored tree must already cover them), in the caller's transaction."""
    root = root_hash(organization_id=organization_id, size=size) if size else EMPTY_ROOT
    now = timezone.now()
    signing = signing_key_current()
    number = previous.number + 1 if previous is not None else 1
    previous_size = previous.tree_size if previous is not None else 0
    previous_root = previous.root_hash if previous is not None else EMPTY_ROOT.hex()
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "organization_id": str(organization_id),
        "number": number,
        "tree_size": size,
        "root_hash": root.hex(),
        "prev_tree_size": previous_size,
        "prev_root_hash": previous_root,
        "hash_alg": "SHA-256",
        "iat": int(now.timestamp()),
    }
    public = SigningKey.objects.values_list("public_jwk", flat=True).get(kid=signing.kid)
    checkpoint = AuditCheckpoint.objects.create(
        organization_id=organization_id, number=number, tree_size=size, root_hash=root.hex(),
        previous_tree_size=previous_size, previous_root_hash=previous_root, published_at=now,
        signature=jws_sign(claims, signing, typ=CHECKPOINT_TYPE), kid=signing.kid,
        public_jwk=public,
    )  # fmt: skip
    transaction.on_commit(CHECKPOINTS_PUBLISHED.inc)
    return checkpoint


def checkpoint_signature_problem(
    checkpoint: AuditCheckpoint, published_keys: dict[str, JSONValue]
) -> str | None:
    """Why the checkpoint's signature does not vouch for its row, or ``None`` when it does:
    the JWS verifies under the kept public key, that key is the one the deployment published
    under its ``kid`` (while the key is still known), and the signed claims are the row's
    (``number`` and the link, present since checkpoints were chained)."""
    known = published_keys.get(checkpoint.kid)
    if known is not None and known != checkpoint.public_jwk:
        return f"its key is not the deployment's key {checkpoint.kid}"
    if not isinstance(checkpoint.public_jwk, dict):
        return "its public key is malformed"
    try:
        claims = jws_verify(
            checkpoint.signature, checkpoint.public_jwk, typ=CHECKPOINT_TYPE, kid=checkpoint.kid
        )
    except InvalidToken as exc:
        return f"its signature does not verify ({exc.reason})"
    signed = {
        "organization_id": str(checkpoint.organization_id),
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash,
        "number": checkpoint.number,
        "prev_tree_size": checkpoint.previous_tree_size,
        "prev_root_hash": checkpoint.previous_root_hash,
    }
    legacy = "number" not in claims  # signed before checkpoints were chained
    for name, value in signed.items():
        if legacy and name in ("number", "prev_tree_size", "prev_root_hash"):
            continue
        if claims.get(name) != value:
            return f"its signed {name} is not the stored one"
    return None


def checkpoint_get(*, organization_id: uuid.UUID, tree_size: int | None) -> AuditCheckpoint:
    """The newest checkpoint of ``tree_size`` (the latest when None); 404 when there is none."""
    checkpoints = AuditCheckpoint.objects.filter(organization_id=organization_id)
    if tree_size is not None:
        checkpoints = checkpoints.filter(tree_size=tree_size)
    found = checkpoints.order_by("-number").first()
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
        # Not the request's fault: the event is not signed over yet (409, like any state
        # that a later moment resolves).
        raise Conflict(
            f"The event is leaf {index}, newer than checkpoint {checkpoint.number} (a tree of"
            f" {checkpoint.tree_size}); ask again after the next checkpoint."
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
        "number": checkpoint.number,
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash,
        "previous_tree_size": checkpoint.previous_tree_size,
        "previous_root_hash": checkpoint.previous_root_hash,
        "published_at": checkpoint.published_at.isoformat(),
        "signature": checkpoint.signature,
        "kid": checkpoint.kid,
        "public_jwk": checkpoint.public_jwk,
    }
