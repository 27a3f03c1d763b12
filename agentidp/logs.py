"""Logs never carry a credential: :class:`RedactCredentials`, on every handler (settings'
``LOGGING``, Celery's, gunicorn's), replaces the value of any credential parameter in a URL or
form-encoded text of a log line (``access_token``, ``client_secret``, ``token``, ``assertion``
and their kin) with ``[redacted]``, whichever logger wrote it: the development server's access
log writes whole request lines, query strings included.

Such parameters are refused in URLs anyway (:class:`agentidp.middleware.InputBoundaryMiddleware`,
RFC 6750 2.3), but a refused request is still logged, and its line must not leak what it held.
"""

import json
import logging
import re
from datetime import UTC, datetime

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


# The attributes every LogRecord has; anything else on a record came as ``extra=`` and is data.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """``AGENTIDP_LOG_FORMAT=json``: one JSON object a line (``time``, ``level``, ``logger``,
    ``message``, the record's ``extra`` fields, ``exception`` when there is one), for a log
    pipeline to parse; credentials are redacted before it by the handler's filter."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                document[name] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            document["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(document, ensure_ascii=False)


_PROBE = re.compile(r'"(?:GET|HEAD) /(?:healthz|readyz|metrics)[ ?]')


class ProbesAtDebug(logging.Filter):
    """On the access log: a load balancer's or Prometheus's routine request (``/healthz``,
    ``/readyz``, ``/metrics``) is a DEBUG line, not INFO: an idle deployment stays quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True  # a failing probe is worth its line
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        if _PROBE.search(message):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG) or (
                logging.getLogger().isEnabledFor(logging.DEBUG)
            )
        return True
