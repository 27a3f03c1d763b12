"""A frozen PostgreSQL or Redis (every process stopped with SIGSTOP, as a hung host or a long GC
pause leaves it: the kernel still accepts the bytes, nothing answers) under a live ``make run``
and under gunicorn as production runs it beside it (its workers keep their connections, so a
statement is already on its way when the server freezes). ``/readyz`` says so within 2 s, the
token endpoint and the API answer 503 in their formats within the statement timeout and its
grace, and once the server resumes nothing those requests sent is committed: no token is
recorded or audited as issued to a client that was answered 503."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from agentidp.devenv import ROOT, free_port
from tests.live import Stack

pytestmark = pytest.mark.django_db(databases=[])

# the stack's defaults: DB_STATEMENT_TIMEOUT 5 s plus the client's 1 s grace, DB_CONNECT_TIMEOUT 3 s
DATABASE_BOUND = 8.0
REDIS_BOUND = 4.0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _token(stack: Stack, scope: str, base: str | None = None) -> requests.Response:
    credentials = stack.credentials()
    return requests.post(
        f"{base or stack.base}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(credentials["agent_client_id"], credentials["agent_client_secret"]),
        timeout=30,
    )


@pytest.fixture
def gunicorn(make_run: Stack) -> Iterator[str]:
    """One sync worker of the production configuration on the stack's services: its one
    connection to PostgreSQL stays open between requests."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own production configuration
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "agentidp.wsgi"],
        env=make_run.services_environment(), cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _issued(stack: Stack, admin: str) -> int:
    """How many token.issued events the demo organization's log holds (pages of 500)."""
    count, url = 0, f"{stack.base}/audit?action=token.issued&page_size=500"
    while url:
        page = requests.get(url, headers={"Authorization": f"Bearer {admin}"}, timeout=10).json()
        count += len(page["results"])
        url = page.get("next")
    return count


def test_a_frozen_database_is_a_bounded_503_and_leaves_nothing_behind(
    make_run: Stack, gunicorn: str
) -> None:
    admin = _token(make_run, "agents:read audit:read").json()["access_token"]
    assert _token(make_run, "agents:read", gunicorn).status_code == 200  # its client cached
    before = _issued(make_run, admin)
    postmaster = make_run.postgres_pid()
    calls: dict[str, Callable[[], requests.Response]] = {
        "token-gunicorn": lambda: _token(make_run, "agents:read", gunicorn),
        "readyz": lambda: requests.get(f"{make_run.base}/readyz", timeout=30),
        **{f"token-{n}": (lambda: _token(make_run, "agents:read")) for n in range(4)},
        "api": lambda: requests.get(
            f"{make_run.base}/agents", headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ),
    }
    with frozen([postmaster, *_children(postmaster)]), ThreadPoolExecutor(len(calls)) as pool:
        answers: dict[str, Any] = dict(
            zip(calls, pool.map(lambda call: timed(call), calls.values()), strict=True)
        )
    ready, seconds = answers.pop("readyz")
    assert ready.status_code == 503 and seconds < 2.0, (ready.status_code, seconds)
    assert ready.json()["checks"] == {"database": "unavailable", "redis": "ok"}
    api, seconds = answers.pop("api")
    assert api.status_code == 503 and seconds < DATABASE_BOUND, (api.status_code, seconds)
    assert api.headers["Content-Type"] == "application/problem+json"
    assert int(api.headers["Retry-After"]) > 0
    for name, (response, seconds) in answers.items():
        assert response.status_code == 503 and seconds < DATABASE_BOUND, (
            name,
            response.text,
            seconds,
        )
        assert response.json()["error"] == "temporarily_unavailable"
        assert int(response.headers["Retry-After"]) > 0
        assert response.headers["Cache-Control"] == "no-store"

    make_run.wait_ready(timeout=60)
    time.sleep(1)  # the statements the frozen server had queued have run (and were refused)
    admin = _token(make_run, "agents:read audit:read").json()["access_token"]
    # the token just asked for is the only one issued since: none of those answered 503 was
    # recorded when the server resumed and ran what they had sent (gunicorn's statement was
    # waiting in the frozen server's socket, and ran: its commit was refused, past its deadline)
    assert _issued(make_run, admin) == before + 1
    verified = requests.get(
        f"{make_run.base}/audit/verify", headers={"Authorization": f"Bearer {admin}"}, timeout=30
    ).json()
    assert verified["verified"] is True, verified


def test_a_frozen_redis_is_a_bounded_503(make_run: Stack) -> None:
    admin = _token(make_run, "agents:read").json()["access_token"]
    with frozen([make_run.redis_pid()]), ThreadPoolExecutor(3) as pool:
        ready, token, api = pool.map(
            timed,
            [
                lambda: requests.get(f"{make_run.base}/readyz", timeout=30),
                lambda: _token(make_run, "agents:read"),
                lambda: requests.get(
                    f"{make_run.base}/agents", headers={"Authorization": f"Bearer {admin}"},
                    timeout=30,
                ),
            ],
        )  # fmt: skip
    assert ready[0].status_code == 503 and ready[1] < 2.0, ready
    assert ready[0].json()["checks"] == {"database": "ok", "redis": "unavailable"}
    assert token[0].status_code == 503 and token[1] < REDIS_BOUND, token
    assert token[0].json()["error"] == "temporarily_unavailable"
    assert api[0].status_code == 503 and api[1] < REDIS_BOUND, api
    assert api[0].headers["Content-Type"] == "application/problem+json"
    make_run.wait_ready(timeout=60)
    assert _token(make_run, "agents:read").status_code == 200
