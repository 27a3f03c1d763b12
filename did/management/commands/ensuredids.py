"""``ensuredids [--org SLUG]``: give every agent without a DID its DID (safe to re-run)."""

from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from did.services import dids_ensure
from organizations.models import Organization

REASON = "command:ensuredids"


class Command(JSONCommand):
    help = "Give every agent that has none its did:web DID and a first key; prints the DIDs."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", default=None, help="Only this organization (its slug).")

    def handle(self, *args: str, **options: str | None) -> None:
        actor = Principal.system(REASON)
        with platform_context(reason=REASON, actor=actor):
            organizations = Organization.objects.all()
            if options["org"]:
                organizations = organizations.filter(slug=options["org"])
            ids = list(organizations.values_list("id", flat=True))
        created: list[str] = []
        for organization_id in ids:
            with tenant_context(organization_id):
                created += dids_ensure(actor=actor, organization_id=organization_id)
        self.emit({"created": list(created)})
