"""AgentIdP project package: settings, URLs, the Celery app and cross-cutting pieces."""

from agentidp.celery import app as celery_app

__all__ = ["celery_app"]
