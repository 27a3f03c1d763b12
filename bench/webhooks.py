"""``make bench``'s webhook figures: deliveries a second per worker process, and the time from
an event's commit to its delivery (p50, p95), against a local receiver.

1. Throughput: a backlog of events (``BENCH_WEBHOOK_EVENTS``, default 3000) is recorded for an
   organization subscribed to ``*``; then one Celery worker process (``--pool solo``) starts,
   relays them from the audit log and delivers them. Deliveries a second = events / (last
   delivery received - first delivery received); the worker's CPU per delivery from ``/proc``.
2. Latency: with the worker idle, a second process records one event every 20 ms for
   ``BENCH_WEBHOOK_SECONDS`` (default 10), each in its own transaction; the receiver notes when
   each arrives, against the envelope's ``timestamp`` (taken as the event is recorded).

The receiver is a threaded HTTP/1.1 server in this process (keep-alive, like a real receiver);
it checks nothing, so what is measured is the sender.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = int(os.environ.get("BENCH_WEBHOOK_EVENTS", "3000"))
LATENCY_SECONDS = int(os.environ.get("BENCH_WEBHOOK_SECONDS", "10"))


class Arrivals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[float, str, str]] = []  # (arrival, webhook-id, envelope timestamp)

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()


def receiver(port: int, arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrived = time.time()
            timestamp = json.loads(body)["timestamp"]
            with arrivals.lock:
                arrivals.seen.append((arrived, self.headers["webhook-id"], timestamp))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


SETUP = """
import django, json, sys
django.setup()
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from organizations.services import organization_create
from webhooks.models import WebhookSubscription
from webhooks.services import subscription_create
actor = Principal.system("bench")
with platform_context(reason="bench"):
    # the token scenario's subscriptions stop here: their backlog is not this measurement's
    WebhookSubscription.objects.filter(active=True).update(active=False)
    org = organization_create(actor=actor, slug="bench-hooks-" + __import__("uuid").uuid4().hex[:6],
                              name="bench hooks", plan="enterprise")
with tenant_context(org.id):
    subscription_create(actor=actor, organization_id=org.id, url=sys.argv[1], event_types=["*"])
print(org.id)
"""

EMIT = """
import django, sys, time, uuid
django.setup()
from django.db import transaction
from agentidp.events import event_record
from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
actor = Principal.system("bench")
org, count, every, batch = uuid.UUID(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
for start in range(0, count, batch):
    with tenant_context(org):
        for n in range(start, min(start + batch, count)):
            event_record(organization_id=org, actor=actor, action="agent.updated",
                         subject_type="agent", subject_id=str(uuid.uuid4()), data={"n": n})
    if every:
        time.sleep(every)
time.sleep(1)  # let the process's wake-up thread send its last wake
"""


def _python(code: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own code
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.strip()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def webhook_figures(env: dict[str, str], port: int, cpu_seconds: object) -> dict[str, float]:
    """Both measurements; ``cpu_seconds(pid)`` reads a process tree's CPU time."""
    assert callable(cpu_seconds)  # noqa: S101
    arrivals = Arrivals()
    server = receiver(port, arrivals)
    env = {**env, "AGENTIDP_SSRF_ALLOWLIST": "127.0.0.1", "AGENTIDP_WEBHOOK_CONCURRENCY": "16"}
    organization = _python(SETUP, env, f"http://127.0.0.1:{port}/hook")
    _python(EMIT, env, organization, str(EVENTS), "0", "500")  # the backlog
    log = (ROOT / ".agentidp" / "bench" / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: S603 - our own Celery app
        [sys.executable, "-m", "celery", "-A", "agentidp", "worker", "--pool", "solo",
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        cpu_before = cpu_seconds(worker.pid)
        deadline = time.monotonic() + 300
        while len({i for _, i, _ in arrivals.seen}) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.1)
        with arrivals.lock:
            seen = list(arrivals.seen)
        received = len({webhook_id for _, webhook_id, _ in seen})
        first, last = min(a for a, _, _ in seen), max(a for a, _, _ in seen)
        cpu = cpu_seconds(worker.pid) - cpu_before
        throughput = received / max(last - first, 1e-6)
        arrivals.clear()
        _python(EMIT, env, organization, str(LATENCY_SECONDS * 50), "0.02", "1")
        time.sleep(3)
        with arrivals.lock:
            latencies = [(arrived - _parse(stamp)) * 1000 for arrived, _, stamp in arrivals.seen]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.shutdown()
    return {
        "backlog_events": float(EVENTS),
        "delivered": float(received),
        "deliveries_per_second_per_worker": round(throughput, 1),
        "worker_cpu_ms_per_delivery": round(cpu * 1000 / max(received, 1), 3),
        "latency_events": float(len(latencies)),
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else -1.0,
        "latency_p95_ms": round(_percentile(latencies, 0.95), 1) if latencies else -1.0,
    }
