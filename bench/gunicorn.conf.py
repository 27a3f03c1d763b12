"""The production gunicorn configuration the README recommends (and make bench measures).

Django views here are CPU-bound with short database round trips: one sync worker per
core plus one keeps both cores busy while a worker waits on PostgreSQL or Redis.

Metrics: every worker is its own process, so prometheus_client runs in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, emptied when gunicorn starts): ``/metrics`` then sums all workers,
whichever of them answers the scrape.
"""

import logging
import multiprocessing
import os
import shutil
import sys
import tempfile

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from agentidp.logs import redact_handlers

bind = "127.0.0.1:8000"
workers = multiprocessing.cpu_count() + 1
worker_class = "sync"
backlog = 2048
keepalive = 5
timeout = 30
max_requests = 0
accesslog = None
preload_app = True

# Set, created and emptied here, before the application (and prometheus_client) is imported:
# preload_app loads it in the master right after reading this file. Files left by an earlier
# run would be summed in.
_OWN_METRICS_DIR = os.path.join(tempfile.gettempdir(), f"agentidp-metrics-{os.getpid()}")
METRICS_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _OWN_METRICS_DIR)
os.makedirs(METRICS_DIR, exist_ok=True)
for _name in os.listdir(METRICS_DIR):
    if _name.endswith(".db"):
        os.remove(os.path.join(METRICS_DIR, _name))


def child_exit(server: Arbiter, worker: Worker) -> None:
    if "prometheus_client" not in sys.modules:
        return  # an application without metrics (make bench's stock peer)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream


def on_exit(server: Arbiter) -> None:
    if METRICS_DIR == _OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


def _redacting(server: Arbiter | Worker) -> None:
    """gunicorn's own loggers (its access log, if one is turned on, writes whole request lines)
    carry no credential either (agentidp.logs)."""
    for name in ("gunicorn.access", "gunicorn.error"):
        redact_handlers(logging.getLogger(name))


when_ready = _redacting
post_worker_init = _redacting
