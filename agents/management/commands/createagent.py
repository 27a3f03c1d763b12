"""``createagent --org <slug> <name>``: register an agent; prints its id as JSON."""

from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue
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
        parser.add_argument(
            "--with-credentials",
            action="store_true",
            help="also issue a client secret and print client_id and client_secret (once)",
        )
        parser.add_argument(
            "--scope", action="append", default=[], dest="scopes", help="allowed scope (repeat)"
        )
        parser.add_argument(
            "--sponsor",
            default=None,
            help="username of the person who answers for it (default: the organization's"
            " longest-standing owner)",
        )

    def handle(self, *args: str, **options: str | list[str] | bool) -> None:
        with platform_context(reason=REASON):
            organization = organization_get_by_slug(slug=str(options["org"]))
        actor = Principal.system(REASON, organization_id=organization.id)
        with tenant_context(organization.id):
            agent = agent_register(
                actor=actor,
                organization_id=organization.id,
                name=str(options["name"]),
                description=str(options["description"]),
                capabilities=[str(c) for c in options["capabilities"]],  # type: ignore[union-attr]
                sponsor=str(options["sponsor"]) if options["sponsor"] else None,
            )
            agent.refresh_from_db(fields=["did"])  # given at registration by the DID app
            document: dict[str, JSONValue] = {
                "id": str(agent.id),
                "name": agent.name,
                "organization": organization.slug,
                "status": agent.status,
                "did": agent.did,
                "sponsor": agent.sponsor_username,
            }
            if options["with_credentials"]:
                # credentials sit above agents; the command line is where both meet
                from credentials.services import client_scopes_set, credential_generate

                issued = credential_generate(
                    actor=actor, organization_id=organization.id, agent_id=agent.id
                )
                scopes = [str(s) for s in options["scopes"]]  # type: ignore[union-attr]
                if scopes:
                    client_scopes_set(
                        actor=actor,
                        organization_id=organization.id,
                        agent_id=agent.id,
                        scopes=scopes,
                    )
                document.update(client_id=issued.client_id, client_secret=issued.secret)
        self.emit(document)
