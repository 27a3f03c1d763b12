"""Shared plumbing for operator management commands: JSON output and domain errors."""

import json
from collections.abc import Mapping

from django.core.management.base import BaseCommand, CommandError

from agentidp.errors import DomainError, JSONValue


class JSONCommand(BaseCommand):
    """A command whose result is one JSON document on stdout; refusals become CommandError."""

    def emit(self, document: Mapping[str, JSONValue]) -> None:
        self.stdout.write(json.dumps(document, indent=2, sort_keys=True))

    def execute(self, *args: object, **options: object) -> str | None:
        try:
            return super().execute(*args, **options)
        except DomainError as exc:
            errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items())
            raise CommandError(f"{exc.detail} {errors}".strip()) from exc
