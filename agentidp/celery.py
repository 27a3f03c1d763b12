"""The Celery application shared by the worker and beat processes."""

import os
from logging import Logger

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from agentidp.logs import redact_handlers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentidp.settings")

app = Celery("agentidp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_credentials(logger: Logger, **kwargs: object) -> None:
    """Celery replaces the root logger's handlers with its own: they redact too."""
    redact_handlers(logger)
