"""A second ``make run`` beside the first, as the README starts one (``AGENTIDP_DATA_DIR``
relative to the checkout, its own port), logging JSON: both serve; management commands name
the server that runs; idle, it says next to nothing, every line a JSON object; and, as a
terminal runs it, one process group: everything it starts or restarts (the embedded
PostgreSQL too, killed and brought back here) stops with the group, leaving nothing on its
data directory."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from agentidp.devenv import ROOT
from tests.live import Stack, stack_start

pytestmark = pytest.mark.django_db(databases=[])

IDLE_SECONDS = 60
IDLE_LINES_AT_MOST = 5


@pytest.fixture(scope="module")
def second() -> Iterator[Stack]:
    stack = stack_start(relative_data_dir=True, extra_env={"AGENTIDP_LOG_FORMAT": "json"})
    yield stack
    if stack.process.poll() is None:
        stack.stop()


def _token(stack: Stack) -> str:
    response = stack.as_demo_agent("/oauth2/token", grant_type="client_credentials")
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_a_second_instance_serves_beside_the_first(make_run: Stack, second: Stack) -> None:
    assert not os.path.isabs(second.environment["AGENTIDP_DATA_DIR"])
    config = (second.data_dir / "redis" / "redis.conf").read_text()
    paths = [
        line.split(" ", 1)[1]
        for line in config.splitlines()
        if line.startswith(("dir ", "logfile "))
    ]
    assert paths and all(os.path.isabs(p) for p in paths), paths
    mine, theirs = _token(make_run), _token(second)
    for stack, token in ((make_run, mine), (second, theirs)):
        response = requests.get(
            f"{stack.base}/agents", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 200, response.text
    # each instance's tokens are its own
    crossed = requests.get(
        f"{second.base}/agents", headers={"Authorization": f"Bearer {mine}"}, timeout=10
    )
    assert crossed.status_code == 401


def test_make_manage_names_the_server_that_runs(second: Stack) -> None:
    """Run as a user runs it in a second terminal: no PORT in the environment."""
    environment = {k: v for k, v in second.environment.items() if k != "PORT"}
    created = subprocess.run(  # noqa: S603 - our own launcher
        [sys.executable, "-m", "agentidp.devenv", "manage", "createagent", "--org", "demo", "named"],
        env=environment, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    agent = json.loads(created.stdout)
    assert agent["did"].startswith(f"did:web:localhost%3A{second.port}:agents:"), agent["did"]
    document = requests.get(f"{second.base}/agents/{agent['id']}/did.json", timeout=10).json()
    assert document["id"] == agent["did"]


def test_idle_it_is_quiet_and_every_line_is_json(second: Stack) -> None:
    time.sleep(5)  # what the requests above logged is written
    before = second.log.read_text().splitlines()
    time.sleep(IDLE_SECONDS)
    lines = second.log.read_text().splitlines()
    idle = lines[len(before) :]
    assert len(idle) <= IDLE_LINES_AT_MOST, "\n".join(idle)
    for line in lines:
        document = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(document), line


def test_killing_the_group_leaves_nothing_running_after_a_restart(second: Stack) -> None:
    first = second.postgres_pid()
    assert os.getpgid(first) == second.process.pid  # the server is in the group
    os.kill(first, signal.SIGKILL)
    assert second.supervisor_said("embedded PostgreSQL restarted", timeout=60), (
        second.log.read_text()[-3000:]
    )
    second.wait_ready()
    restarted = second.postgres_pid()
    assert restarted != first and os.getpgid(restarted) == second.process.pid
    assert second.processes_using_data(), "the stack should be using its data directory"
    os.killpg(second.process.pid, signal.SIGKILL)  # no chance to clean up: the group only
    second.process.wait(timeout=10)
    deadline = time.monotonic() + 20
    while second.processes_using_data() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert second.processes_using_data() == []
