"""Two server processes, each with its own client cache: a change made through one is refused
at once by the other (a new stamp, and the database's own re-check behind it)."""

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from agentidp.devenv import ROOT, free_port
from agentidp.tenancy import tenant_context
from organizations.services import organization_suspend
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.live import process_environment
from tests.oidc.conftest import FORM, Credentialed, credentialed


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]

    def token(self, client_id: str, secret: str, scope: str | None = None) -> requests.Response:
        body = "grant_type=client_credentials" + (f"&scope={quote(scope)}" if scope else "")
        return requests.post(
            f"{self.base}/oauth2/token",
            data=body,
            headers={"Content-Type": FORM},
            auth=(client_id, secret),
            timeout=10,
        )

    def api(self, method: str, path: str, bearer: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {bearer}"}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)


def _start(log: Path) -> Server:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own server
            [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
             "agentidp.wsgi"],
            env=process_environment(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(base=f"http://127.0.0.1:{port}", process=process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{server.base}/healthz", timeout=5).status_code == 200:
                return server
        except requests.RequestException:  # not listening yet, or still loading the app
            time.sleep(0.2)
    process.terminate()
    raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    servers = [_start(tmp_path / "a.log"), _start(tmp_path / "b.log")]
    yield servers[0], servers[1]
    for server in servers:
        server.process.terminate()
    for server in servers:
        server.process.wait(timeout=30)


@dataclass
class Fleet:
    admin: Credentialed
    worker: Credentialed
    other: Credentialed


def test_changes_on_one_process_are_refused_at_once_on_the_other(
    two_servers: tuple[Server, Server], run_in_threads: Callable[..., list[Any]]
) -> None:
    a, b = two_servers

    def fleet() -> Fleet:
        org = OrganizationFactory()
        return Fleet(
            admin=credentialed(org, scopes=["agents:read", "agents:write", "credentials:write"]),
            worker=credentialed(org, scopes=["agents:read", "audit:read"]),
            other=credentialed(org, scopes=["agents:read"]),
        )

    (made,) = run_in_threads(fleet)
    assert isinstance(made, Fleet), made
    admin, worker, other = made.admin, made.worker, made.other
    agent = worker.agent.id
    for server in (a, b):  # both processes now hold the worker's and the other's records
        assert server.token(worker.client_id, worker.secret, "agents:read audit:read").ok
        assert server.token(other.client_id, other.secret).ok
    bearer = a.token(admin.client_id, admin.secret).json()["access_token"]

    # A secret revoked on A
    assert (
        a.api("DELETE", f"/agents/{agent}/credentials/{worker.credential_id}", bearer).status_code
        == 204
    )
    refused = b.token(worker.client_id, worker.secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"

    # A new secret issued on A works on B; rotated on A without grace, the old one stops on B
    issued = a.api("POST", f"/agents/{agent}/credentials", bearer, json={})
    assert issued.status_code == 201, issued.text
    second = issued.json()
    assert b.token(worker.client_id, second["client_secret"]).ok
    rotated = a.api(
        "POST", f"/agents/{agent}/credentials/{second['credential']['id']}/rotate", bearer,
        json={"grace_seconds": 0},
    )  # fmt: skip
    assert rotated.status_code == 201, rotated.text
    secret = rotated.json()["client_secret"]
    assert b.token(worker.client_id, second["client_secret"]).status_code == 401
    assert b.token(worker.client_id, secret, "agents:read audit:read").ok

    # A scope withdrawn on A
    narrowed = a.api("POST", f"/agents/{agent}/scopes", bearer, json={"scopes": ["agents:read"]})
    assert narrowed.status_code == 200, narrowed.text
    refused = b.token(worker.client_id, secret, "audit:read")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    assert b.token(worker.client_id, secret, "agents:read").ok

    # An agent suspended on A
    suspended = a.api("POST", f"/agents/{other.agent.id}/suspend", bearer, json={})
    assert suspended.status_code == 200, suspended.text
    assert b.token(other.client_id, other.secret).status_code == 401

    # The organization suspended (by platform staff, in this test's own process)
    organization_id = worker.agent.organization_id

    def suspend() -> None:
        with tenant_context(organization_id):
            organization_suspend(actor=TEST_ACTOR, organization_id=organization_id)

    assert run_in_threads(suspend) == [None]
    for server in (a, b):
        assert server.token(worker.client_id, secret).status_code == 401
