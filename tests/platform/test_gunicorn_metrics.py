"""The production gunicorn configuration: /metrics counts every worker's requests, whichever
worker answers the scrape."""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agentidp.devenv import ROOT, free_port

REQUESTS_SEEN = "django_http_requests_before_middlewares"


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "agentidp.settings",
        "SECRET_KEY": "metrics-test-" + "x" * 40,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "AGENTIDP_ALLOW_LOCAL_SECRETS": "1",
        "AGENTIDP_LOCAL_SECRETS_PATH": str(tmp_path / "secrets.enc"),
        "AGENTIDP_LOCAL_SECRETS_KEY_FILE": str(tmp_path / "secrets.key"),
        "LOG_LEVEL": "WARNING",
    }
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the configuration sets its own
    server = subprocess.Popen(  # noqa: S603 - our own production configuration
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "agentidp.wsgi"],
        env=environment, cwd=ROOT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
    # the metrics directory the configuration made for this master is gone with it
    assert not (Path(tempfile.gettempdir()) / f"agentidp-metrics-{server.pid}").exists()


def _requests_seen(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS_SEEN:
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    raise AssertionError(f"{REQUESTS_SEEN} missing from /metrics")


def test_metrics_sum_every_worker(gunicorn: str) -> None:
    answered = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{gunicorn}/healthz", timeout=2)
            answered += 1
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    assert answered, "gunicorn did not start"
    for _ in range(40):  # a new connection each: the two workers share them
        assert requests.get(f"{gunicorn}/healthz", timeout=5).status_code == 200
        answered += 1
    for scrape in range(1, 4):
        # every request so far, on whichever worker, plus this scrape itself
        assert _requests_seen(gunicorn) == answered + scrape
    # Collectors computed at scrape time are served in multiprocess mode too.
    text = requests.get(f"{gunicorn}/metrics", timeout=5).text
    assert "# TYPE agentidp_signing_key_age_seconds gauge" in text
