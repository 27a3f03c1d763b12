"""``rewrap``: bring data at rest under the newest keys, for every organization or one.

With ``--rotate`` the key-encryption key gets a new version first (Vault Transit's rotate, or a
new local key) and every organization a new data key; then, per organization, its data keys
are rewrapped under the newest KEK version and every encrypted value re-encrypted under its
newest data key, in batches, without downtime: values under an old version stay readable
until their row is rewritten. Each organization's run is recorded (``JobRun``). Prints one
JSON document; a secret store that fails (sealed, unreachable) stops the command with exit
status 1 and the current batch rolled back.
"""

import sys
import uuid
from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue
from agentidp.secrets import SecretStoreError
from compliance.encryption import RewrapResult, data_rewrap_recorded, key_encryption_key
from organizations.selectors import organization_id_named, organization_ids_for_jobs

REASON = "command:rewrap"


class Command(JSONCommand):
    help = "Re-encrypt data at rest under the newest keys (--rotate: new key versions first)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", help="one organization, by slug or id")
        parser.add_argument(
            "--rotate", action="store_true", help="new KEK and data key versions first"
        )

    def handle(self, *args: str, **options: str | bool | None) -> None:
        org = options["org"]
        if isinstance(org, str):
            ids = [organization_id_named(org, reason=REASON)]
        else:
            listed = organization_ids_for_jobs(reason=REASON, include_deleted=False)
            ids = [uuid.UUID(i) for i in listed]
        total, done = RewrapResult(), 0
        document: dict[str, JSONValue] = {}
        try:
            if options["rotate"]:
                document["kek_version"] = key_encryption_key().rotate()
            for organization_id in ids:
                total.add(data_rewrap_recorded(organization_id, rotate=bool(options["rotate"])))
                done += 1
        except SecretStoreError as exc:
            document.update(
                error=f"{exc}; stopped cleanly (the current batch rolled back)",
                organizations_done=done,
                organizations=len(ids),
                **total.as_document(),
            )
            self.emit(document)
            sys.exit(1)
        document.update(organizations_done=done, organizations=len(ids), **total.as_document())
        self.emit(document)
        if total.values_unreadable:
            sys.exit(1)
