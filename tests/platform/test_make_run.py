"""``make run`` as a user and an operator meet it: a first run on a fresh clone, ``make manage``
beside it, and its services failing under it. Revocation survives Redis losing everything, a
PostgreSQL outage is a 503 with ``Retry-After``, and the supervisor brings each service back."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import requests

from agentidp.devenv import ROOT, free_port
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


def test_credentials_in_urls_never_reach_the_log(make_run: Stack) -> None:
    """The development server's access log writes whole request lines: a token sent in a query
    string (and refused) is not in it."""
    secret = "eyJleaked." + "q" * 40 + ".sig"
    refused = requests.get(f"{make_run.base}/agents?access_token={secret}", timeout=10)
    assert refused.status_code == 400
    requests.post(f"{make_run.base}/oauth2/token?client_secret={secret}", timeout=10)
    time.sleep(0.5)
    log = make_run.log.read_text()
    assert secret not in log
    assert "access_token=[redacted]" in log and "client_secret=[redacted]" in log


def test_loopback_receivers_are_allowed_but_never_the_stacks_own_services(
    make_run: Stack,
) -> None:
    """make run allows webhook receivers on 127.0.0.1 over http on any unprivileged port, and
    still refuses its own Redis (the standard port and the embedded one's) and PostgreSQL's."""
    access_token = token(make_run, "webhooks:manage")
    headers = {"Authorization": f"Bearer {access_token}"}

    def subscribe(url: str) -> requests.Response:
        return requests.post(
            f"{make_run.base}/webhooks", json={"url": url, "event_types": ["agent.*"]},
            headers=headers, timeout=10,
        )  # fmt: skip

    for port in (6379, make_run.redis_port(), 5432, 8200):
        refused = subscribe(f"http://127.0.0.1:{port}/")
        assert refused.status_code == 400, (port, refused.text)
        (message,) = refused.json()["errors"]["url"]
        assert message.startswith("The URL is not allowed.") and "never to a port of" in message
    accepted = subscribe(f"http://127.0.0.1:{free_port()}/hook")
    assert accepted.status_code == 201, accepted.text
    requests.delete(
        f"{make_run.base}/webhooks/{accepted.json()['subscription']['id']}", headers=headers,
        timeout=10,
    )  # fmt: skip


def test_verifyauditchain_exits_as_the_readme_says(make_run: Stack) -> None:
    """An organization's log rewritten by the database's superuser: the command exits 1, and
    ``make manage`` (as the README runs it) reports that as make's own 2."""
    import psycopg

    created = make_run.manage("createorganization", "tampered-log", "--name", "Tampered")
    assert created.returncode == 0, created.stderr
    organization = json.loads(created.stdout)["id"]
    socket_dir = (make_run.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[4]
    with psycopg.connect(
        host=socket_dir, user="postgres", dbname="agentidp", autocommit=True
    ) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE compliance_auditevent SET data = '{\"forged\": true}'"
            " WHERE organization_id = %s AND sequence = 1",
            [organization],
        )
    direct = make_run.manage("verifyauditchain", "--org", "tampered-log")
    assert direct.returncode == 1, direct.stderr
    assert json.loads(direct.stdout)["organizations"][0]["first_invalid"]["code"] == "altered"
    through_make = subprocess.run(  # noqa: S603 - the README's own command
        ["make", "-s", "manage", "ARGS=verifyauditchain --org tampered-log"],  # noqa: S607
        env=make_run.environment, cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert through_make.returncode == 2, through_make.stderr
    healthy = make_run.manage("verifyauditchain", "--org", "demo")
    assert healthy.returncode == 0, healthy.stdout


def test_a_fresh_stack_passes_its_controls_without_waiting_out_beats_intervals(
    make_run: Stack,
) -> None:
    """Beat sends the control jobs that never ran as it starts (the hourly rotation job
    would otherwise first run an hour in): every control passes but TLS, which says it is a
    plain-HTTP stack."""
    session = make_run.admin_session("demo-admin", make_run.credentials()["staff_password"])
    deadline = time.monotonic() + 60
    while True:
        response = session.get(f"{make_run.base}/compliance/controls", timeout=10)
        assert response.status_code == 200, response.text
        failing = {c["id"]: c["detail"] for c in response.json()["controls"] if not c["passing"]}
        if set(failing) <= {"tls"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert list(failing) == ["tls"], failing
    assert failing["tls"].startswith("TLS enforcement is off (AGENTIDP_TLS_ENFORCED=0)")
    controls = {c["id"]: c for c in response.json()["controls"]}
    assert controls["secrets_rotation"]["evidence"]["last_success"] is not None
