"""The README's commands, run as written against a live ``make run``, so they cannot drift.

Each shell block between ``<!-- name -->`` and ``<!-- /name -->`` markers runs in bash with
``set -euo pipefail`` from the checkout, as a user pastes it into a second terminal. ``make
run``, ``make test`` and ``make bench`` themselves are what the suite and CI run.
"""

import ast
import json
import re
import subprocess
from collections.abc import Iterator

import pytest

from agentidp.devenv import ROOT, free_port
from tests.live import Stack

pytestmark = pytest.mark.django_db(databases=[])

README = ROOT / "README.md"


def _git_status() -> str:
    done = subprocess.run(  # noqa: S603 - git on our own checkout
        ["git", "status", "--porcelain", "--untracked-files=all"],  # noqa: S607
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def _the_readme_leaves_the_checkout_as_it_found_it() -> Iterator[None]:
    """Every walkthrough writes only under $DATA: the checkout's git status is the same after
    the whole README has run as before."""
    before = _git_status()
    yield
    assert _git_status() == before


def block(name: str) -> str:
    text = README.read_text()
    found = re.search(rf"<!-- {name} -->\s*```sh\n(.*?)```\s*<!-- /{name} -->", text, re.DOTALL)
    assert found, f"README block {name!r} is missing"
    return found.group(1)


def run(stack: Stack, script: str, **extra: str) -> str:
    environment = {
        k: v for k, v in stack.environment.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    environment["BASE"] = stack.base
    environment.update(extra)
    done = subprocess.run(  # noqa: S603 - the README's own commands
        ["/bin/bash", "-euo", "pipefail", "-c", script],  # noqa: S607
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_the_curl_walkthrough_and_the_session_block(make_run: Stack) -> None:
    out = run(make_run, block("walkthrough"))
    assert re.search(r"HTTP/1\.1 201 Created", out)
    assert re.search(r"(?im)^Location: /agents/[0-9a-f-]{36}\r?$", out)
    assert '"active": true' in out and '"client_id"' in out
    lines = [line.strip() for line in out.splitlines()]
    assert "204" in lines, "the secret was revoked"
    assert "{}" in lines, "/oauth2/revoke answers an empty JSON object"
    assert lines[lines.index("{}") + 1] == "401", "the revoked token is refused"
    verification = json.loads(out[out.rindex("\n{\n") :])  # the last document: /audit/verify
    assert verification["valid"] is True and verification["events_checked"] > 5
    assert verification["complete"] is True

    out = run(make_run, block("session")).replace(" ", "")
    assert '"status":"suspended"' in out
    assert '"action":"agent.suspended"' in out


def test_the_delegation_block(make_run: Stack) -> None:
    """Three agents: A's token exchanged by B, B's by C; the chain introspected; A's policy
    then lets only B act for it, so C's direct exchange is refused; A's sponsor; C's token in
    the status list, then revoked with A's."""
    out = run(make_run, block("delegation"))
    documents = [json.loads(d) for d in re.findall(r"^\{\n.*?^\}$", out, re.M | re.S)]
    introspected, policy = documents[0], documents[1]
    assert introspected["active"] is True and introspected["scope"] == "agents:read"
    chain = introspected["act"]
    assert chain["sub"] != introspected["sub"] and chain["act"]["sub"] not in (
        chain["sub"],
        introspected["sub"],
    )
    assert "act" not in chain["act"]  # two actors, C outermost
    assert policy["actors"] == [chain["act"]["sub"]] and policy["max_depth"] == 2
    lines = out.strip().splitlines()
    refused = json.loads(next(line for line in lines if line.startswith('{"error"')))
    assert refused["error"] == "invalid_grant"
    assert refused["error_description"].startswith("not_allowed_to_act:")
    # the sponsor, then C's token valid in the status list, revoked with its tree's root
    assert lines[-5:] == ["demo-admin", "valid", "{}", '{"active": false}', "revoked"], out


def test_the_resources_block(make_run: Stack) -> None:
    """An MCP server registered with two scopes, one granted: its token, the refusals, and
    the API's metadata reached from a 401."""
    out = run(make_run, block("resources"))
    lines = out.strip().splitlines()
    assert lines[0] == "['tools:call']", out
    assert lines[1] == "tools:call 600", out
    assert json.loads(lines[2])["error"] == "invalid_scope", out
    assert json.loads(lines[3])["error"] == "invalid_target", out
    assert (
        "resource_metadata=" in lines[4] and "/.well-known/oauth-protected-resource/api" in lines[4]
    )
    assert lines[5] == f"['{make_run.base}']", out


def test_the_mcp_block(make_run: Stack) -> None:
    """An MCP server written with the official SDK and protected by agentidp-verifier: its 401
    points at its RFC 9728 metadata, which names AgentIdP; the SDK's client calls its tool with
    a token for it; the platform API's token is refused."""
    lines = run(make_run, block("mcp")).strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].lower().startswith("www-authenticate: bearer"), lines
    assert "/.well-known/oauth-protected-resource/mcp" in lines[0], lines
    assert [server.rstrip("/") for server in ast.literal_eval(lines[1])] == [make_run.base]
    assert lines[2] == f"called by {make_run.credentials()['agent_client_id']}", lines
    assert lines[3] == "401", lines


def test_the_keys_block(make_run: Stack) -> None:
    """A keys-only agent registers its public key, gets a token with a signed assertion, and
    the same assertion again is refused."""
    lines = run(make_run, block("keys")).strip().splitlines()
    assert lines[0] == "k1", lines
    assert lines[1] == "Bearer", lines
    assert json.loads(lines[2])["error"] == "invalid_client", lines


def test_the_webhooks_block(make_run: Stack) -> None:
    out = run(make_run, block("webhooks"), RECEIVER_PORT=str(free_port()))
    verified = re.findall(r"^verified (\S+) ([0-9a-f-]{36})$", out, re.MULTILINE)
    assert [kind for kind, _ in verified][:2] == ["webhook.ping", "agent.created"], out
    deliveries = json.loads(out[out.index('{\n    "next"') :])["results"]
    assert {d["event_id"] for d in deliveries} >= {event_id for _, event_id in verified}
    assert all(d["status"] == "succeeded" for d in deliveries)


def test_the_federation_block(make_run: Stack, partner_run: Stack) -> None:
    """A (make run) trusts B (a second make run), as the two-instance walkthrough says."""
    out = run(
        make_run,
        block("federation"),
        PARTNER=partner_run.base,
        PARTNER_DATA=str(partner_run.data_dir),
    )
    lines = out.splitlines()
    codes = lines.index("200")
    pretty = "\n".join(lines[:codes])
    partner, verified = json.loads("[" + re.sub(r"}\s*{", "},{", pretty) + "]")
    assert partner["issuer"] == partner_run.base and partner["status"] == "active"
    assert verified["valid"] is True and verified["issuer"] == partner_run.base
    assert lines[codes + 1] == "403", out  # read-only
    replay = json.loads(lines[codes + 2])
    assert replay["error"] == "invalid_grant" and replay["error_description"].startswith("replayed")


def test_the_operator_commands(make_run: Stack) -> None:
    out = run(make_run, block("operators"))
    documents = json.loads("[" + re.sub(r"}\s*{", "},{", out.strip()) + "]")
    assert [type(d) for d in documents] == [dict] * 8, out
    organization, alice, researcher, bob, bot, keys, audit, rewrap = documents
    assert organization["slug"] == "acme"
    assert researcher["name"] == "researcher" and "client_secret" not in researcher
    assert alice["password"] and bot["client_secret"].startswith("ais_")
    # the first owner sponsors what commands create, unless another person is named
    assert (researcher["sponsor"], bot["sponsor"]) == ("alice", "bob") and bob["password"]
    assert set(keys["keys"]) == {"ES256", "RS256", "EdDSA"}
    assert keys["keys"]["EdDSA"]["current"] != keys["keys"]["EdDSA"]["next"]
    assert audit["valid"] is True and audit["organizations_checked"] == 1
    assert (rewrap["organizations_done"], rewrap["values_unreadable"]) == (1, 0)
    assert rewrap["values_reencrypted"] == 0  # already under the newest keys


def test_the_did_block(make_run: Stack) -> None:
    out = run(make_run, block("did"), AGENTIDP_DATA_DIR=str(make_run.data_dir))
    assert '"didDocument"' in out and "card signature verified with" in out
    assert (make_run.data_dir / "card.json").exists()
