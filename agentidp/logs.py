"""Logs never carry a credential: :class:`RedactCredentials`, on every handler (settings'
``LOGGING``, Celery's, gunicorn's), replaces the value of any credential parameter in a URL or
form-encoded text of a log line (``access_token``, ``client_secret``, ``token``, ``assertion``
and their kin) with ``[redacted]``, whichever logger wrote it: the development server's access
log writes whole request lines, query strings included.

Such parameters are refused in URLs anyway (:class:`agentidp.middleware.InputBoundaryMiddleware`,
RFC 6750 2.3), but a refused request is still logged, and its line must not leak what it held.
"""

import logging
import re

CREDENTIAL_PARAMETERS = (
    "access_token", "refresh_token", "id_token", "token", "client_secret", "client_assertion",
    "assertion", "subject_token", "actor_token", "code", "password",
)  # fmt: skip
_PARAMETER = re.compile(
    r"(?i)(?<![A-Za-z0-9_])((?:" + "|".join(CREDENTIAL_PARAMETERS) + r")=)[^&\s\"'#;]+"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every credential parameter's value replaced."""
    return _PARAMETER.sub(rf"\1{REDACTED}", text)


class RedactCredentials(logging.Filter):
    """A handler filter: the record's message, rendered and redacted (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed record: logging reports it itself
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Put the filter on every handler of ``logger`` (Celery and gunicorn set up their own)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactCredentials) for f in handler.filters):
            handler.addFilter(RedactCredentials())
