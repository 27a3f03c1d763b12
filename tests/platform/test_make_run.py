"""``make run`` as a user and an operator meet it: a first run on a fresh clone, ``make manage``
beside it, and its services failing under it. Revocation survives Redis losing everything, a
PostgreSQL outage is a 503 with ``Retry-After``, and the supervisor brings each service back."""

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import requests

from tests.live import Stack

pytestmark = pytest.mark.django_db(databases=[])


def token(stack: Stack, scope: str = "agents:read") -> str:
    response = stack.as_demo_agent("/oauth2/token", grant_type="client_credentials", scope=scope)
    assert response.status_code == 200, response.text
    access_token: str = response.json()["access_token"]
    return access_token


def bearer(stack: Stack, access_token: str, path: str = "/agents") -> requests.Response:
    return requests.get(
        f"{stack.base}{path}", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
    )


def introspect(stack: Stack, access_token: str) -> dict[str, Any]:
    response = stack.as_demo_agent("/oauth2/introspect", token=access_token)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(call: Any, status: int, timeout: float = 45) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        response: requests.Response = call()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def test_the_first_run_works_on_a_fresh_clone(make_run: Stack) -> None:
    """The data directory's parents did not exist, and the demo passwords start with '-'."""
    creds = make_run.credentials()
    assert creds["staff_password"].startswith("-")
    assert creds["platform_password"].startswith("-")
    make_run.admin_session("demo-admin", creds["staff_password"])
    make_run.admin_session("platform-admin", creds["platform_password"])


def test_the_embedded_redis_persists(make_run: Stack) -> None:
    client = redis.Redis(port=make_run.redis_port())
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    saved = cast(dict[str, str], client.config_get("save"))
    assert saved["save"].strip() != ""
    assert Path(make_run.data_dir / "redis" / "redis.url").exists() is False
    assert (make_run.data_dir / "redis.url").exists()


def test_make_manage_uses_the_redis_make_run_started(make_run: Stack) -> None:
    shown = make_run.manage(
        "shell", "-c", "from django.conf import settings; print(settings.REDIS_URL)"
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        shown.stdout.strip().splitlines()[-1]
        == (make_run.data_dir / "redis.url").read_text().strip()
    )
    created = make_run.manage("createagent", "--org", "demo", "manage-check", "--with-credentials")
    assert created.returncode == 0, created.stderr
    document = json.loads(created.stdout)  # the whole output is one JSON document
    assert document["name"] == "manage-check" and document["client_secret"].startswith("ais_")


def test_a_debug_server_answers_errors_in_the_documented_format(make_run: Stack) -> None:
    response = requests.get(f"{make_run.base}/no/such/thing", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert len(response.content) < 1000
    response = requests.post(f"{make_run.base}/agents", data="{" * 5000, timeout=10)
    assert response.status_code in (400, 401)
    assert response.headers["Content-Type"] == "application/problem+json"


def test_revocation_survives_redis_restarts_and_data_loss(make_run: Stack) -> None:
    access_token = token(make_run)
    revoked = make_run.as_demo_agent("/oauth2/revoke", token=access_token)
    assert revoked.status_code == 200 and revoked.json() == {}
    assert bearer(make_run, access_token).status_code == 401

    os.kill(make_run.redis_pid(), signal.SIGTERM)
    down = wait_status(lambda: bearer(make_run, access_token), 503, timeout=5)
    if down.status_code == 503:  # caught before the supervisor restarted it
        assert down.headers["Content-Type"] == "application/problem+json"
        assert int(down.headers["Retry-After"]) >= 1
    assert make_run.supervisor_said("embedded Redis restarted")
    assert wait_status(lambda: bearer(make_run, access_token), 401).status_code == 401
    assert introspect(make_run, access_token) == {"active": False}

    # Everything Redis held is gone: the list is rebuilt from the database.
    pid = make_run.redis_pid()
    for name in ("appendonly.aof", "dump.rdb"):
        (make_run.data_dir / "redis" / name).unlink(missing_ok=True)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        try:
            if make_run.redis_pid() != pid:
                break
        except Exception:  # noqa: S110 - not restarted yet
            pass
        time.sleep(0.3)
    assert wait_status(lambda: bearer(make_run, access_token), 401).status_code == 401
    assert introspect(make_run, access_token) == {"active": False}
    assert bearer(make_run, token(make_run)).status_code == 200


def test_a_postgres_outage_is_503_with_retry_after_then_recovers(make_run: Stack) -> None:
    access_token = token(make_run)
    os.kill(make_run.postgres_pid(), signal.SIGKILL)
    time.sleep(0.2)
    api = bearer(make_run, access_token)
    issued = make_run.as_demo_agent("/oauth2/token", grant_type="client_credentials")
    for response in (api, issued):
        if response.status_code == 200:
            pytest.fail("served while PostgreSQL was down (restarted too fast to observe?)")
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
    assert api.headers["Content-Type"] == "application/problem+json"
    assert issued.json()["error"] == "temporarily_unavailable"
    assert make_run.supervisor_said("embedded PostgreSQL restarted")
    assert wait_status(lambda: bearer(make_run, access_token), 200).status_code == 200
    assert requests.get(f"{make_run.base}/readyz", timeout=10).status_code == 200


def test_api_docs_work_without_internet(make_run: Stack) -> None:
    """Swagger UI and ReDoc come from the app (drf-spectacular-sidecar), not a CDN."""
    import re

    for page in ("/api/docs/", "/api/redoc/"):
        html = requests.get(f"{make_run.base}{page}", timeout=10).text
        sources = re.findall(r'src="([^"]+)"', html)
        assert sources and all(s.startswith("/static/") for s in sources), sources
        for source in sources:
            asset = requests.get(f"{make_run.base}{source}", timeout=10)
            assert asset.status_code == 200 and len(asset.content) > 1000, source
