"""Scrape-time webhook metrics: how long the oldest undelivered event has waited."""

from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from webhooks.selectors import undelivered_age_seconds


class QueueLagCollector(Collector):
    """``agentidp_webhook_queue_lag_seconds``: age of the oldest pending delivery, read from
    the database when scraped."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "agentidp_webhook_queue_lag_seconds",
            "Age of the oldest event still waiting to be delivered to a webhook (0: none).",
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """What registering asks (so it does not collect, reading the database, at start)."""
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            family.add_metric([], undelivered_age_seconds(reason="metrics:webhook-lag"))
        except DatabaseError:
            return  # the database is down: say nothing rather than a wrong zero
        yield family
