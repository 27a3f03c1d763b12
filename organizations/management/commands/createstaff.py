"""``createstaff --org <slug> <username>``: a staff login tied to one organization."""

import secrets
from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.tenancy import platform_context
from organizations.choices import MemberRole
from organizations.selectors import organization_get_by_slug
from organizations.services import staff_create

REASON = "command:createstaff"


class Command(JSONCommand):
    help = "Create a staff user for an organization; prints a generated password once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--role", default=MemberRole.ADMIN, choices=MemberRole.values)
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default=None, help="default: generate one")
        parser.add_argument("--superuser", action="store_true", help="platform superuser")

    def handle(self, *args: str, **options: str | bool | None) -> None:
        password = options["password"] or secrets.token_urlsafe(16)
        actor = Principal.system(REASON)
        with platform_context(reason=REASON, actor=actor):
            organization = organization_get_by_slug(slug=str(options["org"]))
            user = staff_create(
                actor=actor,
                organization_id=organization.id,
                username=str(options["username"]),
                password=str(password),
                role=str(options["role"]),
                email=str(options["email"] or ""),
                superuser=bool(options["superuser"]),
            )
        document: dict[str, JSONValue] = {
            "id": user.pk,
            "username": user.username,
            "organization": organization.slug,
            "role": str(options["role"]),
            "superuser": user.is_superuser,
        }
        if not options["password"]:
            document["password"] = str(password)  # shown once; only its hash is stored
        self.emit(document)
