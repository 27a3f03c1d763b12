"""An RFC 9162 (Certificate Transparency 2.0) Merkle tree over each organization's audit log,
beside its hash chain: an auditor checks that one event is in the log (an inclusion proof)
and that the log only grew between two checkpoints (a consistency proof) without reading it.

* Leaf ``i`` is the event of sequence ``i + 1``; its leaf data is the event's chain hash (32
  bytes, which commits to the event's contents and to everything before it). Leaf hash
  ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``, the empty tree's
  hash ``SHA-256()`` (RFC 9162 2.1.1).
* Only *perfect* subtrees are stored (:class:`AuditMerkleNode`, level ``L`` index ``j``
  covering leaves ``j*2^L`` to ``(j+1)*2^L - 1``): about two rows an event. Every range the
  RFC's recursions need (``MTH(D[a:b])``) is a right fold over at most ``log2(n)`` of them, so
  a proof in a log of a million events reads about 40 rows in one query.
* :func:`merkle_extend` appends the nodes of events not yet in the tree (the checkpoint job
  runs it), never on the request path: appending an event costs nothing more.
"""

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import connection, transaction

from compliance.models import AuditEvent

Range = tuple[int, int]  # [start, end) of leaf indices
Node = tuple[int, int]  # (level, index) of a perfect subtree

EMPTY_ROOT = hashlib.sha256(b"").digest()
BATCH = 5000
MERKLE_LOCK = 7_342_002  # pg_advisory_xact_lock(key, organization) serializing builders
# A batch of nodes in one statement (three arrays), not a row of parameters per node.
INSERT_NODES = """
INSERT INTO compliance_auditmerklenode (organization_id, level, index, hash)
SELECT %s::uuid, l, i, h FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[]) AS n(l, i, h)
"""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1): RFC 9162's k."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[Node]:
    """The perfect subtrees whose right fold is ``MTH(D[start:end])``, left to right (the
    ranges the RFC's recursions produce always start on a multiple of their left part)."""
    nodes: list[Node] = []
    while end - start > 0:
        size = end - start
        if size & (size - 1) == 0 and start % size == 0:
            nodes.append((size.bit_length() - 1, start // size))
            break
        k = _split(size)
        nodes.append((k.bit_length() - 1, start // k))
        start += k
    return nodes


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes make the audit path of leaf ``index`` in a tree of ``size``
    (RFC 9162 2.1.3.1, PATH(m, D[n])), from the leaf up."""
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The ranges whose hashes prove the tree of ``first`` leaves is a prefix of the tree of
    ``second`` (RFC 9162 2.1.4.1, PROOF(m, D[n]) = SUBPROOF(m, D[n], true)), in the RFC's
    order. Empty when ``first`` is 0 or equals ``second``."""
    if first == 0 or first == second:
        return []
    ranges: list[Range] = []
    start, end, whole = 0, second, True
    while True:
        if first == end:
            if not whole:
                ranges.append((start, end))
            break
        k = _split(end - start)
        if first <= start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, whole = start + k, False
    ranges.reverse()
    return ranges


def range_hash(start: int, end: int, nodes: dict[Node, bytes]) -> bytes:
    """``MTH(D[start:end])`` from stored perfect subtrees (a right fold)."""
    if start == end:
        return EMPTY_ROOT
    parts = [nodes[node] for node in perfect_subtrees(start, end)]
    folded = parts[-1]
    for left in reversed(parts[:-1]):
        folded = node_hash(left, folded)
    return folded


def nodes_load(*, organization_id: uuid.UUID, wanted: Iterable[Node]) -> dict[Node, bytes]:
    """The stored hashes of ``wanted`` perfect subtrees, in one query."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.level, n.index, n.hash FROM compliance_auditmerklenode n"
            " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, index)"
            " ON n.level = w.level AND n.index = w.index WHERE n.organization_id = %s",
            [[p[0] for p in pairs], [p[1] for p in pairs], str(organization_id)],
        )
        return {(int(level), int(index)): bytes(value) for level, index, value in cursor}


def hashes_of(*, organization_id: uuid.UUID, ranges: Sequence[Range]) -> list[bytes]:
    """``MTH`` of each range, from the stored nodes."""
    wanted = [node for start, end in ranges for node in perfect_subtrees(start, end)]
    nodes = nodes_load(organization_id=organization_id, wanted=wanted)
    return [range_hash(start, end, nodes) for start, end in ranges]


def tree_size(*, organization_id: uuid.UUID) -> int:
    """How many events the stored tree covers."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(max(index) + 1, 0) FROM compliance_auditmerklenode"
            " WHERE organization_id = %s AND level = 0",
            [str(organization_id)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def root_hash(*, organization_id: uuid.UUID, size: int) -> bytes:
    (root,) = (
        hashes_of(organization_id=organization_id, ranges=[(0, size)]) if size else [EMPTY_ROOT]
    )
    return root


class MerkleFrontier:
    """``MTH`` of a list of leaves that grows one leaf at a time, in one pass and ``log2(n)``
    memory: the perfect subtrees the tree ends with, as :func:`_frontier` names them. The
    integrity check recomputes a signed checkpoint's root from the events themselves with it,
    whatever the stored nodes say."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, data: bytes) -> None:
        node = hashlib.sha256(b"\x00" + data).digest()  # leaf_hash, inlined: a call a leaf
        stack, carry = self._stack, self.size
        while carry & 1:
            node = hashlib.sha256(b"\x01" + stack.pop() + node).digest()
            carry >>= 1
        stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        """``MTH(D[0:size])``: the perfect subtrees folded from the right."""
        if not self._stack:
            return EMPTY_ROOT
        folded = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            folded = node_hash(left, folded)
        return folded


def stored_leaves(*, organization_id: uuid.UUID, start: int, end: int) -> dict[int, bytes]:
    """The stored leaf hashes of leaves ``start`` to ``end - 1``, by index, in one query."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT index, hash FROM compliance_auditmerklenode WHERE organization_id = %s"
            " AND level = 0 AND index >= %s AND index < %s",
            [str(organization_id), start, end],
        )
        return {int(index): bytes(value) for index, value in cursor}


class MerkleGap(ValueError):
    """The events to add are not the next sequence numbers: the log lost events."""


@dataclass(frozen=True)
class Extension:
    """What one run of the builder added."""

    previous_size: int
    size: int


def _frontier(size: int) -> list[Node]:
    """The perfect subtrees a tree of ``size`` leaves ends with: the left siblings the next
    leaves combine with."""
    return [(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1]


@transaction.atomic
def merkle_extend(*, organization_id: uuid.UUID, limit: int | None = None) -> Extension:
    """Add the events not yet in the organization's tree (at most ``limit``), in order; safe
    to run concurrently (an advisory lock per organization) and again."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [MERKLE_LOCK, str(organization_id)]
        )
    start = tree_size(organization_id=organization_id)
    size = start
    known = nodes_load(organization_id=organization_id, wanted=_frontier(size))
    while limit is None or size - start < limit:
        take = BATCH if limit is None else min(BATCH, limit - (size - start))
        rows = list(
            AuditEvent.objects.filter(organization_id=organization_id, sequence__gt=size)
            .order_by("sequence")
            .values_list("sequence", "hash")[:take]
        )
        if not rows:
            break
        batch: list[tuple[int, int, bytes]] = []
        for sequence, chained in rows:
            if sequence != size + 1:
                # the integrity check names it (and refuses to sign) before any extension runs
                raise MerkleGap(f"audit sequence gap at {size + 1}")
            value, level, index = leaf_hash(bytes.fromhex(chained)), 0, size
            known[(level, index)] = value
            batch.append((level, index, value))
            while index & 1:
                value = node_hash(known[(level, index - 1)], value)
                level, index = level + 1, index >> 1
                known[(level, index)] = value
                batch.append((level, index, value))
            size += 1
        with connection.cursor() as cursor:
            columns = [[node[n] for node in batch] for n in range(3)]
            cursor.execute(INSERT_NODES, [str(organization_id), *columns])
        frontier = set(_frontier(size))
        known = {node: value for node, value in known.items() if node in frontier}
    return Extension(previous_size=start, size=size)
