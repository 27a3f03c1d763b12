"""``/metrics``: django-prometheus's exposition, plus collectors computed at scrape time.

A collector that reads state when scraped (not a counter a process increments) must be asked
by whichever registry serves the page: the default one in a single process, the one built per
scrape over every worker's files in prometheus_client's multiprocess mode (gunicorn), which
would otherwise never call it. Apps add theirs with :func:`scrape_time_collector`.
"""

import os

import prometheus_client
from django.http import HttpRequest, HttpResponse
from prometheus_client import multiprocess
from prometheus_client.registry import Collector

_collectors: list[Collector] = []


def scrape_time_collector(collector: Collector) -> None:
    """Serve ``collector`` on ``/metrics`` in both modes (called once, from an app's ready())."""
    _collectors.append(collector)
    prometheus_client.REGISTRY.register(collector)


def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of every metric of every process serving this app."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in _collectors:
            registry.register(collector)
    else:
        registry = prometheus_client.REGISTRY
    page = prometheus_client.generate_latest(registry)
    return HttpResponse(page, content_type=prometheus_client.CONTENT_TYPE_LATEST)
