"""``createorganization <slug> [--name] [--plan]``: create a tenant; prints it as JSON."""

from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.principals import Principal
from agentidp.tenancy import platform_context
from organizations.choices import Plan
from organizations.services import organization_create

REASON = "command:createorganization"


class Command(JSONCommand):
    help = "Create an organization and print it as JSON."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--plan", default=Plan.FREE, choices=Plan.values)
        parser.add_argument("--max-agents", type=int, default=None)
        parser.add_argument("--max-tokens-per-month", type=int, default=None)

    def handle(self, *args: str, **options: str | int | None) -> None:
        actor = Principal.system(REASON)
        with platform_context(reason=REASON, actor=actor):
            organization = organization_create(
                actor=actor,
                slug=str(options["slug"]),
                name=str(options["name"] or ""),
                plan=str(options["plan"]),
                max_agents=options["max_agents"],  # type: ignore[arg-type]
                max_tokens_per_month=options["max_tokens_per_month"],  # type: ignore[arg-type]
            )
        self.emit(
            {
                "id": str(organization.id),
                "slug": organization.slug,
                "name": organization.name,
                "plan": organization.plan,
                "max_agents": organization.max_agents,
                "max_tokens_per_month": organization.max_tokens_per_month,
            }
        )
