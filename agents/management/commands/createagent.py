"""``createagent --org <slug> <name>``: register an agent; prints its id as JSON."""

from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from agents.services import agent_register
from organizations.selectors import organization_get_by_slug

REASON = "command:createagent"


class Command(JSONCommand):
    help = "Register an agent in an organization and print it as JSON."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--description", default="")
        parser.add_argument("--capability", action="append", default=[], dest="capabilities")

    def handle(self, *args: str, **options: str | list[str]) -> None:
        with platform_context(reason=REASON):
            organization = organization_get_by_slug(slug=str(options["org"]))
        actor = Principal.system(REASON, organization_id=organization.id)
        with tenant_context(organization.id):
            agent = agent_register(
                actor=actor,
                organization_id=organization.id,
                name=str(options["name"]),
                description=str(options["description"]),
                capabilities=list(options["capabilities"]),
            )
        self.emit(
            {
                "id": str(agent.id),
                "name": agent.name,
                "organization": organization.slug,
                "status": agent.status,
            }
        )
