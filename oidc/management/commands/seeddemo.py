"""``seeddemo``: the demo organization, staff logins and an agent with credentials behind
``make run``, plus the first signing keys.

Idempotent: a second run finds what the first created; the agent's client secret is printed
only by the run that issued it (``make run`` keeps it under ``.agentidp/``).
"""

from argparse import ArgumentParser

from django.contrib.auth.models import User

from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.tenancy import platform_context
from agents.models import Agent
from agents.services import agent_register
from credentials.models import ClientSecret
from credentials.services import client_scopes_set, credential_generate
from oidc.keys import signing_keys_ensure
from organizations.choices import AGENT_SCOPES, MemberRole, Plan
from organizations.models import SYSTEM_ORGANIZATION_ID, Organization
from organizations.services import organization_create, staff_create

REASON = "command:seeddemo"


class Command(JSONCommand):
    help = "Create (once) the demo organization, its staff login, a platform login and an agent."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--staff-password", required=True)
        parser.add_argument("--platform-password", required=True)
        parser.add_argument("--org", default="demo")

    def handle(self, *args: str, **options: str) -> None:
        actor = Principal.system(REASON)
        with platform_context(reason=REASON, actor=actor):
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                organization = organization_create(
                    actor=actor, slug=options["org"], name="Demo organization", plan=Plan.PRO
                )
            if not User.objects.filter(username="demo-admin").exists():
                staff_create(
                    actor=actor,
                    organization_id=organization.id,
                    username="demo-admin",
                    password=options["staff_password"],
                    role=MemberRole.OWNER,
                )
            if not User.objects.filter(username="platform-admin").exists():
                staff_create(
                    actor=actor,
                    organization_id=SYSTEM_ORGANIZATION_ID,
                    username="platform-admin",
                    password=options["platform_password"],
                    role=MemberRole.OWNER,
                    superuser=True,
                )
            agent = Agent.objects.filter(organization_id=organization.id, name="demo-agent").first()
            if agent is None:
                agent = agent_register(
                    actor=actor,
                    organization_id=organization.id,
                    name="demo-agent",
                    description="An agent created by make run",
                    capabilities=["search", "summarize"],
                )
            signing_keys_ensure(actor=actor)
            document: dict[str, JSONValue] = {
                "organization": {"id": str(organization.id), "slug": organization.slug},
                "agent": {"id": str(agent.id), "name": agent.name, "client_id": str(agent.id)},
                "staff": "demo-admin",
                "platform": "platform-admin",
            }
            if not ClientSecret.objects.filter(client__agent_id=agent.id).exists():
                issued = credential_generate(
                    actor=actor, organization_id=organization.id, agent_id=agent.id
                )
                client_scopes_set(
                    actor=actor,
                    organization_id=organization.id,
                    agent_id=agent.id,
                    scopes=sorted(AGENT_SCOPES),
                )
                document["client_secret"] = issued.secret
        self.emit(document)
