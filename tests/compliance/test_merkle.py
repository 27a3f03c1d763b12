"""The audit log's RFC 9162 Merkle tree: proofs checked by an independent verifier written here
from RFC 9162's algorithms (2.1.3.2 and 2.1.4.2), against a reference tree hash computed here
from the RFC's definition; odd sizes and the empty tree; checkpoints signed by a key of the
JWKS; the API's proofs; refusals as problems; the tree and checkpoints append-only."""

import base64
import hashlib
from typing import Any

import jwt
import psycopg
import pytest
from rest_framework.test import APIClient

from agentidp.tenancy import tenant_context
from compliance.integrity import checkpoint_publish
from compliance.merkle import (
    MerkleFrontier,
    consistency_ranges,
    hashes_of,
    inclusion_ranges,
    merkle_extend,
    root_hash,
)
from compliance.models import AuditEvent
from compliance.tasks import audit_checkpoint_publish_task
from organizations.models import Organization
from tests.compliance.attacks import append
from tests.dbroles import raw_connection
from tests.factories import TEST_ACTOR, OrganizationFactory

pytestmark = pytest.mark.django_db


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 2.1.1 defines it."""
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:]))


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = sha(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, path: list[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 2.1.4.2 (with its trivial cases: an empty first tree, equal sizes)."""
    if first == 0:
        return path == []
    if first == second:
        return path == [] and first_root == second_root
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = sha(b"\x01" + c + fr), sha(b"\x01" + c + sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = sha(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


def _events(org: Organization, count: int) -> list[bytes]:
    """Append ``count`` events; every event's chain hash, in order (the tree's leaf data)."""
    append(org, count)
    with tenant_context(org.id):
        hashes = AuditEvent.objects.filter(organization_id=org.id).order_by("sequence")
        return [bytes.fromhex(h) for h in hashes.values_list("hash", flat=True)]


def test_every_proof_of_every_size_verifies_independently(org: Organization) -> None:
    leaves = _events(org, 37)
    with tenant_context(org.id):
        merkle_extend(organization_id=org.id, limit=5)  # built in several runs
        merkle_extend(organization_id=org.id, limit=8)
        assert merkle_extend(organization_id=org.id).size == len(leaves)
        roots = [reference_root(leaves[:n]) for n in range(len(leaves) + 1)]
        for size in range(1, len(leaves) + 1):
            (root,) = hashes_of(organization_id=org.id, ranges=[(0, size)])
            assert root == roots[size], size
            for index in range(size):
                path = hashes_of(organization_id=org.id, ranges=inclusion_ranges(index, size))
                leaf = sha(b"\x00" + leaves[index])
                assert verify_inclusion(leaf, index, size, path, root), (index, size)
                assert not verify_inclusion(sha(b"\x00x"), index, size, path, root)
            for first in range(size + 1):
                proof = hashes_of(organization_id=org.id, ranges=consistency_ranges(first, size))
                assert verify_consistency(first, size, proof, roots[first], root), (first, size)
                if 0 < first < size:
                    assert not verify_consistency(first, size, proof, sha(b"forged"), root)


def test_the_one_pass_root_is_the_rfcs_at_every_size() -> None:
    """What the integrity check recomputes from the events themselves, leaf by leaf."""
    leaves = [sha(str(n).encode()) for n in range(70)]
    frontier = MerkleFrontier()
    assert frontier.root() == reference_root([])
    for size, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == size and frontier.root() == reference_root(leaves[:size]), size


def _publish(org: Organization) -> dict[str, Any]:
    with tenant_context(org.id):
        checkpoint = checkpoint_publish(organization_id=org.id, actor=TEST_ACTOR).checkpoint
    assert checkpoint is not None
    return {
        "number": checkpoint.number, "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash,
    }  # fmt: skip


def _jwks(client: APIClient) -> Any:
    return jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())


def test_checkpoints_are_signed_by_a_key_of_the_jwks(api: APIClient, org: Organization) -> None:
    _events(org, 6)
    first = _publish(org)
    _events(org, 5)
    second = _publish(org)
    # the five events and the audit.checkpoint event the first checkpoint was recorded as
    assert second["tree_size"] == first["tree_size"] + 6
    assert (first["number"], second["number"]) == (1, 2)
    listed = api.get("/audit/checkpoints").json()["results"]
    assert [c["tree_size"] for c in listed] == [second["tree_size"], first["tree_size"]]
    assert listed[0]["previous_tree_size"] == first["tree_size"]
    assert listed[0]["previous_root_hash"] == first["root_hash"]
    assert listed[1]["previous_tree_size"] == 0
    keys = {key.key_id: key for key in _jwks(api).keys}
    for checkpoint in listed:
        header = jwt.get_unverified_header(checkpoint["signature"])
        assert header["typ"] == "agentidp-checkpoint+jwt" and header["kid"] == checkpoint["kid"]
        claims = jwt.decode(checkpoint["signature"], keys[header["kid"]], algorithms=["ES256"])
        assert claims["organization_id"] == str(org.id)
        assert claims["tree_size"] == checkpoint["tree_size"]
        assert claims["root_hash"] == checkpoint["root_hash"] and claims["hash_alg"] == "SHA-256"
        assert claims["number"] == checkpoint["number"]
        assert claims["prev_tree_size"] == checkpoint["previous_tree_size"]
        assert claims["prev_root_hash"] == checkpoint["previous_root_hash"]
        # the public key kept with the checkpoint verifies it too (after rotation as well)
        kept = jwt.PyJWK.from_dict(checkpoint["public_jwk"])
        assert jwt.decode(checkpoint["signature"], kept, algorithms=["ES256"]) == claims


def test_the_api_proves_an_event_and_the_growth_between_checkpoints(
    api: APIClient, org: Organization
) -> None:
    leaves = _events(org, 9)
    first = _publish(org)
    _events(org, 4)
    second = _publish(org)
    with tenant_context(org.id):
        event = AuditEvent.objects.filter(organization_id=org.id, sequence=3).get()
    proof = api.get(f"/audit/{event.id}/proof").json()
    assert proof["tree_size"] == second["tree_size"] and proof["leaf_index"] == 2
    assert proof["leaf_data"] == event.hash
    path = [base64.b64decode(h) for h in proof["inclusion_path"]]
    root = bytes.fromhex(proof["checkpoint"]["root_hash"])
    leaf = sha(b"\x00" + bytes.fromhex(proof["leaf_data"]))
    assert base64.b64decode(proof["leaf_hash"]) == leaf
    assert verify_inclusion(leaf, 2, proof["tree_size"], path, root)
    older = api.get(f"/audit/{event.id}/proof", {"tree_size": first["tree_size"]}).json()
    assert older["tree_size"] == first["tree_size"]
    assert verify_inclusion(
        leaf, 2, first["tree_size"], [base64.b64decode(h) for h in older["inclusion_path"]],
        bytes.fromhex(first["root_hash"]),
    )  # fmt: skip
    grown = api.get(
        "/audit/checkpoints/consistency",
        {"first": first["tree_size"], "second": second["tree_size"]},
    ).json()  # fmt: skip
    assert verify_consistency(
        first["tree_size"], second["tree_size"],
        [base64.b64decode(h) for h in grown["consistency_path"]],
        bytes.fromhex(first["root_hash"]), bytes.fromhex(second["root_hash"]),
    )  # fmt: skip
    assert len(leaves) + 1 + 4 == second["tree_size"]  # the first audit.checkpoint event too


def test_the_empty_tree(other_org: Organization) -> None:
    with tenant_context(other_org.id):
        assert root_hash(organization_id=other_org.id, size=0) == sha(b"")
        assert hashes_of(organization_id=other_org.id, ranges=[(0, 0)]) == [sha(b"")]
    assert reference_root([]) == sha(b"")
    assert consistency_ranges(0, 5) == [] and verify_consistency(0, 5, [], sha(b""), sha(b"x"))
    assert inclusion_ranges(0, 1) == []


def test_refusals_are_problems(api: APIClient, org: Organization) -> None:
    _events(org, 3)
    checkpoint = _publish(org)
    with tenant_context(org.id):
        latest = AuditEvent.objects.filter(organization_id=org.id).order_by("-sequence").first()
    assert latest is not None
    unknown = "00000000-0000-0000-0000-000000000000"
    for path, params, status in [
        (f"/audit/{unknown}/proof", {}, 404),
        ("/audit/not-a-uuid/proof", {}, 400),
        (f"/audit/{latest.id}/proof", {"tree_size": checkpoint["tree_size"] + 7}, 404),
        (f"/audit/{latest.id}/proof", {"tree_size": "x"}, 400),
        (f"/audit/{latest.id}/proof", {"tree_size": "0"}, 400),
        ("/audit/checkpoints/consistency", {"first": 2, "second": 1}, 400),
        ("/audit/checkpoints/consistency", {"first": 1, "second": 99999}, 404),
        ("/audit/checkpoints/consistency", {"first": -1, "second": 2}, 400),
        ("/audit/checkpoints/consistency", {}, 400),
    ]:
        response = api.get(path, params)
        assert response.status_code == status, (path, params, response.content)
        assert response["Content-Type"].startswith("application/problem+json")
    _events(org, 1)  # newer than the latest checkpoint
    with tenant_context(org.id):
        newest = AuditEvent.objects.filter(organization_id=org.id).order_by("-sequence").first()
    assert newest is not None
    pending = api.get(f"/audit/{newest.id}/proof")
    assert pending.status_code == 409  # not signed over yet: after the next checkpoint
    assert "ask again after the next checkpoint" in pending.json()["detail"]


def test_another_organizations_events_and_checkpoints_are_not_found(
    client_for: Any, org: Organization, other_org: Organization, api: APIClient
) -> None:
    _events(other_org, 2)
    audit_checkpoint_publish_task(str(other_org.id))
    with tenant_context(other_org.id):
        foreign = AuditEvent.objects.filter(organization_id=other_org.id).first()
    assert foreign is not None
    assert api.get(f"/audit/{foreign.id}/proof").status_code == 404
    assert api.get("/audit/checkpoints").json()["results"] == []
    assert APIClient().get("/audit/checkpoints").status_code == 401


def test_nodes_and_checkpoints_are_append_only(run_in_threads: Any) -> None:
    def commit() -> str:
        committed = OrganizationFactory()
        _events(committed, 2)
        with tenant_context(committed.id):
            checkpoint_publish(organization_id=committed.id, actor=TEST_ACTOR)
        return str(committed.id)

    (org_id,) = run_in_threads(commit)
    assert isinstance(org_id, str), org_id
    with raw_connection() as conn:
        conn.execute("SELECT set_config('app.organization_id', %s, false)", [org_id])
        for table in ("compliance_auditmerklenode", "compliance_auditcheckpoint"):
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert count is not None and int(str(count[0])) > 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"DELETE FROM {table}")
            conn.rollback()
            conn.execute("SELECT set_config('app.organization_id', %s, false)", [org_id])
