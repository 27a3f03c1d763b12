"""``verifyauditchain``: verify every organization's audit chain (deleted ones included), or one.

Prints one JSON document naming, for each broken chain, the first event that does not verify;
exits 1 when any chain is broken, so it can gate a script or a cron job.
"""

import sys
import uuid
from argparse import ArgumentParser

from agentidp.boundary import slug_refusal
from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue, NotFound
from agentidp.tenancy import platform_context, tenant_context
from compliance.services import audit_chain_verify_recorded
from organizations.models import Organization
from organizations.selectors import organization_ids_for_jobs

REASON = "command:verifyauditchain"


class Command(JSONCommand):
    help = "Verify audit hash chains: all organizations (deleted included) or --org SLUG|ID."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", help="one organization, by slug or id")

    def handle(self, *args: str, **options: str | None) -> None:
        ids = [self._one(options["org"])] if options["org"] else None
        if ids is None:
            ids = [
                uuid.UUID(i) for i in organization_ids_for_jobs(reason=REASON, include_deleted=True)
            ]
        reports: list[JSONValue] = []
        valid = True
        for organization_id in ids:
            with tenant_context(organization_id):
                result = audit_chain_verify_recorded(organization_id=organization_id)
            valid = valid and result.valid
            reports.append(result.as_document(organization_id))
        self.emit({"valid": valid, "organizations_checked": len(ids), "organizations": reports})
        if not valid:
            sys.exit(1)

    def _one(self, key: str) -> uuid.UUID:
        with platform_context(reason=REASON):
            try:
                found = Organization.objects.filter(id=uuid.UUID(key)).first()
            except ValueError:
                # a deleted organization's slug is deleted-<hex>, still a valid slug
                found = None if slug_refusal(key) else Organization.objects.filter(slug=key).first()
        if found is None:
            raise NotFound(f"No organization {key!r}.")
        return found.id
