"""Crash safety with real processes: a Celery worker killed with SIGKILL in the middle of
delivering, Redis (broker and wake flags) restarted, a new worker started; every event still
reaches the receiver, each under its own webhook-id."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from agentidp.devenv import ROOT, EmbeddedRedis, free_port
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from tests.factories import AgentFactory, OrganizationFactory
from tests.live import process_environment
from tests.webhooks.conftest import RECEIVER_HOST, Receiver, subscribe

EVENTS = 40


class SlowReceiver:
    """Takes its time over each delivery, so a worker can be killed while some are in flight."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        time.sleep(0.15)
        with self.lock:
            self.ids.append(request.headers["webhook-id"])
        return Response("ok")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


def _celery(kind: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    extra = (
        ["--concurrency", "1", "--without-gossip", "--without-mingle"] if kind == "worker" else []
    )
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own Celery app
            [sys.executable, "-m", "celery", "-A", "agentidp", kind, "--loglevel", "INFO", *extra],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool child, no warning
    process.wait(timeout=10)


def _wait(condition: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def test_worker_killed_mid_delivery_and_redis_restarted_lose_nothing(
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    run_in_threads: Callable[..., list[Any]],
) -> None:
    slow = SlowReceiver()
    http = HTTPServer(host=RECEIVER_HOST, port=0, threaded=True)
    http.start()
    http.expect_request("/hook", method="POST").respond_with_handler(slow.handle)
    receiver = Receiver(server=http)

    def committed() -> tuple[Any, list[str]]:
        org = OrganizationFactory()
        subscribe(org, receiver, ["agent.created"])
        for index in range(EVENTS):
            AgentFactory(organization=org, name=f"crash-{index}")
        with tenant_context(org.id):
            ids = AuditEvent.objects.filter(organization_id=org.id, action="agent.created")
            return org, [str(i) for i in ids.values_list("id", flat=True)]

    ((org, expected),) = run_in_threads(committed)
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    env = {
        **process_environment(),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "AGENTIDP_SSRF_ALLOWLIST": RECEIVER_HOST,
        "AGENTIDP_WEBHOOK_ALLOW_HTTP": "1",
        "AGENTIDP_SSRF_ALLOWED_PORTS": "1024-65535",
        "AGENTIDP_WEBHOOK_RETRY_SCHEDULE": "0.5,1,1,1,1,1,1,1,1,1",
        "AGENTIDP_WEBHOOK_TIMEOUT": "1",
        "AGENTIDP_WEBHOOK_CONCURRENCY": "2",
        "AGENTIDP_WEBHOOK_BATCH": "10",
    }
    log = tmp_path / "celery.log"
    beat = _celery("beat", {**env}, log)  # the pump: relays and due deliveries every 5 s
    worker = _celery("worker", env, log)
    try:
        _wait(lambda: len(slow.ids) >= 5, 60, log)
        _kill(worker)  # mid-delivery: a batch is claimed and partly sent
        killed_at = len(slow.ids)
        assert killed_at < EVENTS, "the worker finished before it could be killed"
        redis_server.stop()
        redis_server.start()
        worker = _celery("worker", env, log)
        _wait(lambda: set(expected) <= set(slow.ids), 90, log)
    finally:
        for process in (worker, beat):
            if process.poll() is None:
                _kill(process)
        http.stop()
    assert set(slow.ids) == set(expected)  # every event, each under its own webhook-id
    duplicates = len(slow.ids) - len(set(slow.ids))
    print(f"crash test: {EVENTS} events, {killed_at} received before SIGKILL, "
          f"{len(slow.ids)} deliveries received, {duplicates} repeated")  # fmt: skip
    assert org is not None
