"""App config for webhooks."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Subscriptions, the relay from the audit log, signed delivery with retry, and streams."""

    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.events import on_events_committed
        from agentidp.metrics import scrape_time_collector
        from webhooks import delivery  # noqa: F401 - its metrics exist in every process
        from webhooks.metrics import QueueLagCollector
        from webhooks.relay import relay_wake

        on_events_committed(relay_wake)
        scrape_time_collector(QueueLagCollector())
