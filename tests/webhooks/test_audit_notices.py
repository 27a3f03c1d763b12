"""The audit log's own events on webhooks: each signed checkpoint as ``audit.checkpoint`` (the
signed JWS in its data, so a receiver keeps its own copy), and ``audit.integrity_failed`` when
a verification finds the log tampered with, which reaches the subscriptions of the organization
it is about and no other."""

from collections.abc import Callable
from typing import Any

import jwt

from compliance.tasks import audit_chain_verify_task, audit_checkpoint_publish_task
from organizations.models import SYSTEM_ORGANIZATION_ID, Organization
from tests.compliance.attacks import append, edit
from tests.factories import OrganizationFactory
from tests.webhooks.conftest import Receiver, subscribe
from webhooks.delivery import deliveries_send
from webhooks.relay import relay_run


def _deliver(*organizations: Organization) -> None:
    relay_run(organization_id=SYSTEM_ORGANIZATION_ID)
    for organization in organizations:
        relay_run(organization_id=organization.id)
        deliveries_send(organization_id=organization.id)


def test_checkpoints_and_integrity_failures_reach_their_organization_only(
    run_in_threads: Callable[..., list[Any]], receiver: Receiver, other_org: Organization
) -> None:
    def committed() -> Organization:
        organization = OrganizationFactory()
        append(organization, 11)
        return organization

    (organization,) = run_in_threads(committed)
    assert isinstance(organization, Organization)
    subscribe(organization, receiver, ["audit.*"])
    bystander = subscribe(other_org, receiver, ["audit.*"])
    append(organization, 1)
    audit_checkpoint_publish_task(str(organization.id))
    _deliver(organization, other_org)
    (checkpoint,) = [r.payload for r in receiver.received]
    assert checkpoint["type"] == "audit.checkpoint"
    assert checkpoint["organization_id"] == str(organization.id)
    signed = jwt.decode(checkpoint["data"]["signature"], options={"verify_signature": False})
    assert signed["tree_size"] == checkpoint["data"]["tree_size"] == 14  # with webhook.created
    assert signed["number"] == 1 and signed["prev_tree_size"] == 0

    edit(organization.id)  # event 10, as the database's superuser
    assert audit_chain_verify_task(str(organization.id))["verified"] is False
    _deliver(organization, other_org)
    notices = [r for r in receiver.received if r.payload["type"] == "audit.integrity_failed"]
    (notice,) = notices
    assert notice.verified_by == [receiver.secrets[0]]  # signed for the organization's hook
    assert bystander.secret not in notice.verified_by
    data = notice.payload["data"]
    assert data["organization_id"] == str(organization.id)
    assert (data["code"], data["sequence"], data["source"]) == (
        "altered", 10, "beat:audit-chain-verify",
    )  # fmt: skip
