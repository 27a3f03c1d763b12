"""The public DID documents, cached in Redis (``DID_DOCUMENT_CACHE_TTL_SECONDS``) and
forgotten after any change to the agent, its keys or its status. Redis being down only costs
the cache."""

import json
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from redis import RedisError

from agentidp.usage import redis_client

logger = logging.getLogger("agentidp.did")

VARIANTS = ("document", "resolution", "card-a2a", "card-agntcy")


@dataclass(frozen=True)
class Rendered:
    """A public document as served: its body, validators and HTTP status."""

    body: bytes
    etag: str
    last_modified: float
    status: int


def _key(agent_id: uuid.UUID, variant: str) -> str:
    return f"agentidp:did:{agent_id}:{variant}"


def cached(agent_id: uuid.UUID, variant: str) -> Rendered | None:
    try:
        raw = redis_client().get(_key(agent_id, variant))
    except RedisError:
        return None
    if not isinstance(raw, bytes):
        return None
    head, _, body = raw.partition(b"\n")
    meta = json.loads(head)
    return Rendered(body=body, etag=meta["etag"], last_modified=meta["lm"], status=meta["status"])


def cache_put(agent_id: uuid.UUID, variant: str, rendered: Rendered) -> None:
    meta = json.dumps(
        {"etag": rendered.etag, "lm": rendered.last_modified, "status": rendered.status}
    ).encode()
    try:
        redis_client().set(
            _key(agent_id, variant),
            meta + b"\n" + rendered.body,
            ex=int(settings.AGENTIDP["DID_DOCUMENT_CACHE_TTL_SECONDS"]),
        )
    except RedisError:
        logger.info("DID document not cached: Redis unavailable")


def did_documents_forget(agent_id: uuid.UUID) -> None:
    """Forget every cached public document of the agent (after a change commits)."""
    try:
        redis_client().delete(*(_key(agent_id, variant) for variant in VARIANTS))
    except RedisError:
        # They expire within DID_DOCUMENT_CACHE_TTL_SECONDS.
        logger.warning("cached DID documents of %s not forgotten: Redis unavailable", agent_id)
