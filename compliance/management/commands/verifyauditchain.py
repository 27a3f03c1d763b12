"""``verifyauditchain``: verify every organization's audit log (deleted ones included), or one:
its hash chain, its signed checkpoints and their copies outside the database
(:mod:`compliance.integrity`).

Prints one JSON document naming, for each log that fails, the first event that does not verify
and why; exits 1 when any log fails, so it can gate a script or a cron job (through ``make
manage``, make itself reports any failed command as 2).
"""

import sys
import uuid
from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from compliance.integrity import audit_integrity_verify_recorded
from organizations.selectors import organization_id_named, organization_ids_for_jobs

REASON = "command:verifyauditchain"


class Command(JSONCommand):
    help = "Verify audit logs: all organizations (deleted included) or --org SLUG|ID."

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
                result = audit_integrity_verify_recorded(
                    organization_id=organization_id, actor=Principal.system(REASON),
                    source=REASON,
                )  # fmt: skip
            valid = valid and result.verified
            reports.append(result.as_document())
        self.emit({"valid": valid, "organizations_checked": len(ids), "organizations": reports})
        if not valid:
            sys.exit(1)
