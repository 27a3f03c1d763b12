"""Version stamps of the client records the token endpoint caches in each process.

The lean token path (``oidc.lean``) keeps each client's record (:class:`ClientRecord`) in
process memory and trusts an entry only while its organization's stamp is unchanged: the stamp
comes back from the one Redis call every token request makes anyway (admission). Whatever
changes a client, a secret, an agent or an organization gives the organization a new stamp once
its transaction commits; every app connects its own models here (``post_save`` and
``post_delete``), so services and admin edits alike are covered.

The stamp only spares the lean path a stale answer. It is not what refuses a revoked secret
or a suspended agent: the SQL that issues each token re-checks those in the database.
"""

import logging
import uuid
from functools import partial

from django.db import models, transaction
from redis import RedisError

from agentidp.usage import redis_client

logger = logging.getLogger("agentidp.stamps")


def client_records_key(organization_id: uuid.UUID) -> str:
    return f"agentidp:client-records:{organization_id}"


def _stamp(organization_id: uuid.UUID) -> None:
    try:
        # A random value rather than a counter: a Redis that lost its data cannot hand out an
        # old stamp again.
        redis_client().set(client_records_key(organization_id), uuid.uuid4().hex)
    except RedisError:
        # Caches keep their entries until their age limit; every issuance is re-checked in the
        # database meanwhile.
        logger.warning("could not stamp organization %s's client records", organization_id)


def client_records_changed(organization_id: uuid.UUID) -> None:
    """Give the organization's client records a new stamp after the current transaction commits
    (at once outside one)."""
    transaction.on_commit(partial(_stamp, organization_id), robust=True)


def _changed(sender: type[models.Model], instance: models.Model, **kwargs: object) -> None:
    organization_id = getattr(instance, "organization_id", None) or instance.pk
    if isinstance(organization_id, uuid.UUID):
        client_records_changed(organization_id)


def stamp_on_change(*senders: type[models.Model]) -> None:
    """Re-stamp the owning organization whenever a row of ``senders`` is saved or deleted (an
    organization's own rows re-stamp it)."""
    for sender in senders:
        models.signals.post_save.connect(_changed, sender=sender, weak=False)
        models.signals.post_delete.connect(_changed, sender=sender, weak=False)
