"""``rotatesigningkeys [--algorithm ES256|RS256|EdDSA]``: rotate with overlap; prints JSON."""

from argparse import ArgumentParser

from agentidp.commands import JSONCommand
from agentidp.principals import Principal
from agentidp.tenancy import platform_context
from oidc.choices import SigningAlgorithm
from oidc.services import signing_key_rotate, signing_keys_published

REASON = "command:rotatesigningkeys"


class Command(JSONCommand):
    help = "Promote the next signing key, retire the current one (it keeps verifying), publish a new next key."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--algorithm", choices=SigningAlgorithm.values, default=None)

    def handle(self, *args: str, **options: str | None) -> None:
        actor = Principal.system(REASON)
        with platform_context(reason=REASON, actor=actor):
            current = signing_key_rotate(actor=actor, algorithm=options["algorithm"])
            published = [str(key["kid"]) for key in signing_keys_published()]
        self.emit(
            {"current": current.kid, "algorithm": current.algorithm, "published": list(published)}
        )
