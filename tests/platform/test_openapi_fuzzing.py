"""Schemathesis against a live ``make run``: every operation of the served OpenAPI schema,
fuzzed with a fixed seed and example budget, first as an agent holding every scope, then as
platform staff with a session. Zero server errors and zero responses outside the schema.

Every check runs, ``positive_data_acceptance`` included: a schema-valid request must be
accepted (``tests/platform/schemathesis.toml`` names the statuses a valid request may meet,
410 for a decommissioned agent's DID among them), so the schema states every rule it can, and
``tests/platform/schemathesis_hooks.py`` completes generated valid cases for the few it cannot
(between fields, against the clock, against the world: see there). The one exception: the
staff run leaves out ``ignored_auth``, because schemathesis cannot swap a session cookie that
arrives with its CSRF cookie in one header and would report the untouched session as ignored
authentication; the agent run checks it against the bearer scheme.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agentidp.devenv import ROOT
from tests.live import Stack, stack_start

pytestmark = pytest.mark.django_db(databases=[])

SEED = "20261124"
MAX_EXAMPLES = "12"
EVERY_AGENT_SCOPE = ["agents:read", "agents:write", "credentials:write", "audit:read"]


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Stack]:
    """A stack of its own: the fuzzers suspend, delete and revoke what they find."""
    stack = stack_start()
    yield stack
    stack.stop()


HERE = Path(__file__).parent


def schemathesis(stack: Stack, tmp_path: Path, *headers: str, exclude: str = "") -> tuple[int, str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{stack.base}/api/schema/", "--checks", "all",
        *(["--exclude-checks", exclude] if exclude else []),
        "--seed", SEED, "--max-examples", MAX_EXAMPLES, "--generation-deterministic",
        "--generation-allow-x00", "false", "--workers", "2", "--no-color",
        "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
    ]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.platform.schemathesis_hooks",
        "AGENTIDP_FUZZ_BASE": stack.base,  # a partner issuer that answers: the stack itself
    }
    done = subprocess.run(  # noqa: S603 - the schemathesis CLI of our own environment
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if done.returncode != 0 and stack.log.exists():
        # what the server said of its 5xx answers (which store timed out, what was unhandled)
        said = [line for line in stack.log.read_text(errors="replace").splitlines()
                if "service unavailable" in line or "unhandled" in line]  # fmt: skip
        output += "\n--- the stack's log on its 5xx answers ---\n" + "\n".join(said[-40:])
    generated = re.search(r"(\d+) generated", output)
    print(f"schemathesis: {generated.group(0) if generated else '?'} (exit {done.returncode})")
    return done.returncode, output


def assert_clean(code: int, output: str) -> None:
    assert code == 0, output[-6000:]
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert summary is not None, output[-3000:]
    assert summary.group(1) == summary.group(2)
    assert int(summary.group(1)) > 500, "the budget should reach every operation many times"


def test_as_an_agent_with_every_scope(fuzzed: Stack, tmp_path: Path) -> None:
    scopes = [arg for scope in EVERY_AGENT_SCOPE for arg in ("--scope", scope)]
    created = fuzzed.manage("createagent", "--org", "demo", "fuzzer", "--with-credentials", *scopes)
    assert created.returncode == 0, created.stderr
    agent = json.loads(created.stdout)
    response = requests.post(
        f"{fuzzed.base}/oauth2/token",
        data={"grant_type": "client_credentials", "scope": " ".join(EVERY_AGENT_SCOPE)},
        auth=(agent["client_id"], agent["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert_clean(*schemathesis(fuzzed, tmp_path, f"Authorization: Bearer {token}"))


def test_as_platform_staff(fuzzed: Stack, tmp_path: Path) -> None:
    session = fuzzed.admin_session("platform-admin", fuzzed.credentials()["platform_password"])
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    assert_clean(
        *schemathesis(
            fuzzed,
            tmp_path,
            f"Cookie: {cookies}",
            f"X-CSRFToken: {session.cookies['csrftoken']}",
            exclude="ignored_auth",
        )
    )
