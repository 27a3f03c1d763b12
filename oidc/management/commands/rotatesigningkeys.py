"""``rotatesigningkeys [--algorithm ES256|RS256|EdDSA] [--status]``: rotate with
pre-publication; prints JSON. Refused (exit 1, nothing changed) while a next key is younger
than the pre-publication window or the secret store is unreachable. ``--status`` only shows
each algorithm's current and next key and when the next one may sign."""

from argparse import ArgumentParser

from django.core.management.base import CommandError

from agentidp.commands import JSONCommand
from agentidp.principals import Principal
from agentidp.secrets import SecretStoreError
from agentidp.tenancy import platform_context
from credentials.choices import SigningAlgorithm
from oidc.keys import signing_keys_ensure
from oidc.services import signing_key_rotate, signing_keys_published, signing_keys_status

REASON = "command:rotatesigningkeys"


class Command(JSONCommand):
    help = (
        "Every algorithm's (or one's) pre-published next signing key starts signing, the "
        "current one retires (it keeps verifying its tokens), a new next key is published."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--algorithm", choices=SigningAlgorithm.values, default=None)
        parser.add_argument(
            "--status", action="store_true", help="Show the keys and when each may rotate."
        )

    def handle(self, *args: str, **options: str | None) -> None:
        actor = Principal.system(REASON)
        if options["status"]:
            with platform_context(reason=REASON, actor=actor):
                signing_keys_ensure(actor=actor)
                self.emit({"keys": dict(signing_keys_status())})
            return
        try:
            with platform_context(reason=REASON, actor=actor):
                algorithm = options["algorithm"]
                rotation = signing_key_rotate(
                    actor=actor, algorithms=[algorithm] if algorithm else None
                )
                published = [str(key["kid"]) for key in signing_keys_published()]
        except SecretStoreError as exc:
            raise CommandError(
                f"The secret store is unavailable ({type(exc).__name__}); nothing was rotated."
            ) from exc
        self.emit(
            {
                "current": {name: key.kid for name, key in rotation.activated.items()},
                "retired": dict(rotation.retired),
                "removed": list(rotation.removed),
                "published": list(published),
            }
        )
