"""``verifyauditchain``: verify every organization's audit chain (deleted ones included), or one.

Prints one JSON document naming, for each broken chain, the first event that does not verify;
exits 1 when any chain is broken, so it can gate a script or a cron job.
"""

import sys
import uuid
from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue
from agentidp.tenancy import tenant_context
from compliance.services import audit_chain_verify_recorded
from organizations.selectors import organization_id_named, organization_ids_for_jobs

REASON = "command:verifyauditchain"


class Command(JSONCommand):
    help = "Verify audit hash chains: all organizations (deleted included) or --org SLUG|ID."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", help="one organization, by slug or id")

    def handle(self, *args: str, **options: str | None) -> None:
        ids = [organization_id_named(options["org"], reason=REASON)] if options["org"] else None
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
