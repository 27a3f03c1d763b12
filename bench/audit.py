"""``make bench``'s audit figures, in a process of their own with Django set up:

1. Chain verification: ``audit_chain_verify`` over one organization's chain of
   ``BENCH_AUDIT_EVENTS`` events (default 1,000,000), built with the real hash function and
   written with COPY by the owner role (COPY FROM is refused under RLS); events a second (target
   at least 100,000). Then the verification every verifier runs (``audit_integrity_verify``:
   the same walk recomputing the Merkle root at the signed checkpoint, the checkpoints' chain,
   their signatures and their copy in the secret store), events a second.
2. Proof generation: the inclusion proof of a random event in that organization's Merkle tree
   of the same size (``inclusion_proof``, as ``GET /audit/{id}/proof`` calls it), 200 of them;
   p50 and p99 in milliseconds (target under 10 ms). The tree is built by ``merkle_extend``
   beforehand, timed too.
3. Append throughput: ``BENCH_AUDIT_WRITERS`` threads (default 8), each appending events to an
   organization of its own through ``event_record`` for 5 s, one transaction an event.
"""

import json
import os
import random
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import django

django.setup()

from django.db import connections, transaction  # noqa: E402

from agentidp.events import event_record  # noqa: E402
from agentidp.principals import Principal  # noqa: E402
from agentidp.tenancy import platform_context, tenant_context  # noqa: E402
from compliance.checkpoints import inclusion_proof  # noqa: E402
from compliance.integrity import audit_integrity_verify, checkpoint_publish  # noqa: E402
from compliance.merkle import merkle_extend  # noqa: E402
from compliance.models import AuditEvent  # noqa: E402
from compliance.services import EventContent, audit_chain_verify  # noqa: E402
from organizations.services import organization_create  # noqa: E402

EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000"))
WRITERS = int(os.environ.get("BENCH_AUDIT_WRITERS", "8"))
ACTOR = Principal.system("bench")


def _organization(label: str) -> uuid.UUID:
    with platform_context(reason="bench"):
        created = organization_create(
            actor=ACTOR, slug=f"bench-{label}-{uuid.uuid4().hex[:6]}", name="bench", plan="pro"
        )
    return created.id


def chain_build(organization_id: uuid.UUID, count: int) -> None:
    """Append ``count`` valid chained events after the organization's existing ones (COPY)."""
    import hashlib

    with tenant_context(organization_id):
        last = AuditEvent.objects.filter(organization_id=organization_id).order_by("-sequence")
        head = last.values_list("sequence", "hash").first() or (0, "0" * 64)
        sequence, previous = int(head[0]), str(head[1])
        start = datetime.now(tz=UTC)
    # COPY FROM is refused under row-level security: the owner role writes the rows, outside
    # the application's transaction (which would sit idle past its timeout meanwhile)
    with connections["owner"].cursor() as cursor:
        copy_sql = (
            "COPY compliance_auditevent (id, organization_id, sequence, occurred_at, "
            "actor_type, actor_id, action, outcome, subject_type, subject_id, data, "
            "previous_hash, hash) FROM STDIN"
        )
        with cursor.cursor.copy(copy_sql) as copy:
            for n in range(count):
                sequence += 1
                content = EventContent(
                    event_id=uuid.uuid4(), organization_id=organization_id,
                    occurred_at=start + timedelta(microseconds=n), actor_type="system",
                    actor_id="bench", action="agent.updated", outcome="success",
                    subject_type="agent", subject_id=str(n), data={"n": n},
                )  # fmt: skip
                digest = hashlib.sha256(
                    content.canonical(sequence=sequence, previous_hash=previous)
                ).hexdigest()
                copy.write_row(
                    (content.event_id, organization_id, sequence, content.occurred_at,
                     "system", "bench", "agent.updated", "success", "agent", str(n),
                     json.dumps({"n": n}), previous, digest)
                )  # fmt: skip
                previous = digest
        cursor.execute(
            "UPDATE compliance_auditchainhead SET sequence = %s, hash = %s"
            " WHERE organization_id = %s",
            [sequence, previous, str(organization_id)],
        )


def appenders(seconds: float) -> dict[str, float]:
    organizations = [_organization(f"append-{n}") for n in range(WRITERS)]
    counts = [0] * WRITERS
    barrier = threading.Barrier(WRITERS)
    deadline: list[float] = []

    def write(slot: int) -> None:
        organization_id = organizations[slot]
        barrier.wait()
        if slot == 0:
            deadline.append(time.monotonic() + seconds)
        while not deadline:
            time.sleep(0.001)
        try:
            while time.monotonic() < deadline[0]:
                with tenant_context(organization_id), transaction.atomic():
                    event_record(
                        organization_id=organization_id, actor=ACTOR, action="agent.updated",
                        subject_type="agent", subject_id="bench", data={"slot": slot},
                    )  # fmt: skip
                counts[slot] += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"writers": WRITERS, "events_per_second": round(sum(counts) / seconds, 1)}


def main() -> None:
    organization_id = _organization("audit")
    started = time.perf_counter()
    chain_build(organization_id, EVENTS)
    built = time.perf_counter() - started
    with tenant_context(organization_id):
        started = time.perf_counter()
        result = audit_chain_verify(organization_id=organization_id)
        verify_seconds = time.perf_counter() - started
        assert result.valid, result  # noqa: S101
        started = time.perf_counter()
        size = merkle_extend(organization_id=organization_id).size
        tree_seconds = time.perf_counter() - started
        checkpoint_publish(organization_id=organization_id, actor=ACTOR)
    with tenant_context(organization_id):
        started = time.perf_counter()
        integrity = audit_integrity_verify(organization_id=organization_id)
        integrity_seconds = time.perf_counter() - started
        assert integrity.verified, integrity.as_document()  # noqa: S101
        ids = list(
            AuditEvent.objects.filter(
                organization_id=organization_id,
                sequence__in=random.sample(range(1, size + 1), 200),  # noqa: S311 - sampling
            ).values_list("id", flat=True)
        )
        latencies = []
        for event_id in ids:
            started = time.perf_counter()
            proof = inclusion_proof(organization_id=organization_id, event_id=event_id)
            latencies.append((time.perf_counter() - started) * 1000)
            assert proof.checkpoint.tree_size >= size  # noqa: S101
    latencies.sort()
    figures = {
        "events": result.events_checked,
        "chain_built_seconds": round(built, 1),
        "chain_verify_events_per_second": round(result.events_checked / verify_seconds, 1),
        "integrity_verify_events_per_second": round(
            integrity.events_checked / integrity_seconds, 1
        ),
        "merkle_tree_build_seconds": round(tree_seconds, 1),
        "proof_p50_ms": round(statistics.median(latencies), 2),
        "proof_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "proof_path_length": len(proof.path),
        "append": appenders(5.0),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
