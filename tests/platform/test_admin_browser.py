"""The admin in a real browser (Playwright driving Debian's Chromium) at 1366x768 against a live
``make run``: an owner does every step of running the organization with no shell, platform
staff see every organization, an auditor reads and downloads the report. Each step's screenshot
is kept under ``build/test-artifacts/<test>/`` (the ``artifacts`` fixture)."""

import csv
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pypdf import PdfReader
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tests.live import Stack

pytestmark = pytest.mark.django_db(databases=[])

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the test talks to the stack
    # over HTTP only, never to the ORM, so Django's async guard has nothing to protect here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture(scope="module")
def other_organization(make_run: Stack) -> dict[str, Any]:
    """An organization the demo staff must never see, with an agent of its own."""
    made = make_run.manage("createorganization", "browser-other", "--name", "Other Org")
    assert made.returncode == 0, made.stderr
    owner = make_run.manage(
        "createstaff", "--org", "browser-other", "other-owner", "--role", "owner"
    )
    assert owner.returncode == 0, owner.stderr  # who sponsors its agent
    agent = make_run.manage("createagent", "--org", "browser-other", "secret-project")
    assert agent.returncode == 0, agent.stderr
    document: dict[str, Any] = json.loads(agent.stdout)
    return document


def login(browser: Browser, stack: Stack, username: str, password: str) -> Page:
    page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
    page.goto(f"{stack.base}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    click(page, "input[type=submit]")
    page.wait_for_url(f"{stack.base}/admin/")
    return page


class Shots:
    """Numbered full-page screenshots, one a step."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def __call__(self, page: Page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


def main_text(page: Page) -> str:
    return re.sub(r"\s+", " ", page.locator("#content").inner_text())


def messages(page: Page) -> str:
    found = page.locator("ul.messagelist")
    return found.inner_text() if found.count() else ""


def click(page: Page, selector: str) -> None:
    """Click something that loads the next page, and wait for it."""
    with page.expect_navigation():
        page.click(selector)


def tool(page: Page, name: str) -> None:
    """Click one of the object tools above a page (the admin's buttons for one row)."""
    with page.expect_navigation():
        page.locator(".object-tools").get_by_role("link", name=name, exact=True).click()


def download(page: Page, name: str) -> Path:
    """Click an object tool that downloads a file; the file, once the browser has it."""
    with page.expect_download() as started:
        page.locator(".object-tools").get_by_role("link", name=name, exact=True).click()
    return Path(started.value.path())


def follow(page: Page, name: str, within: str = "#result_list") -> None:
    with page.expect_navigation():
        page.locator(within).get_by_role("link", name=name, exact=True).click()


def confirm(page: Page, label: str) -> str:
    """Read a confirmation page, then answer it: what it said will happen."""
    said = page.locator(".agentidp-consequences").inner_text()
    click(page, f"input[type=submit][value='{label}']")
    return re.sub(r"\s+", " ", said)


def shown_once(page: Page) -> dict[str, str]:
    rows = page.locator("table.agentidp-once tr")
    return {
        rows.nth(i).locator("th").inner_text().strip(): rows.nth(i).locator("code").inner_text()
        for i in range(rows.count())
    }


def eventually(page: Page, check: Callable[[], bool], what: str, seconds: float = 45) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(1)
        page.reload()


def token(stack: Stack, client_id: str, secret: str, scope: str = "") -> requests.Response:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    return requests.post(
        f"{stack.base}/oauth2/token", data=data, auth=(client_id, secret), timeout=10
    )


@pytest.fixture
def receiver() -> Iterator[tuple[HTTPServer, list[int]]]:
    """A webhook receiver on 127.0.0.1 (which make run lets webhooks reach), answering the
    status at the head of the list."""
    statuses = [200]
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook", method="POST").respond_with_handler(
        lambda request: Response("ok" if statuses[0] < 400 else "failing", status=statuses[0])
    )
    server.start()
    yield server, statuses
    server.stop()


def test_an_owner_runs_the_organization_in_the_admin_alone(
    browser: Browser, make_run: Stack, partner_run: Stack, receiver: tuple[HTTPServer, list[int]],
    other_organization: dict[str, Any], artifacts: Path,
) -> None:  # fmt: skip
    shot = Shots(artifacts)
    base = make_run.base
    page = login(browser, make_run, "demo-admin", make_run.credentials()["staff_password"])
    shot(page, "index")
    index = main_text(page)
    for meaningless in ("Grants", "Id tokens", "Refresh tokens", "Groups", "Solar"):
        assert meaningless not in index

    # --- an agent, from registration to its first token --------------------------------------
    page.goto(f"{base}/admin/agents/agent/add/")
    page.fill("input[name=name]", "browser-bot")
    page.fill("textarea[name=description]", "Answers billing questions")
    page.fill("textarea[name=capabilities]", "billing\nrefunds")
    page.fill("textarea[name=skills]", "invoice-lookup: finds an invoice by number [billing]")
    shot(page, "agent-add")
    click(page, "input[name=_save]")
    assert "Registered browser-bot. Issue its first client secret next." in messages(page)
    agent_page = page.url
    shot(page, "agent-registered")

    tool(page, "Issue a client secret")
    shot(page, "secret-confirm")
    confirm(page, "Issue the secret")
    first = shown_once(page)
    assert set(first) == {"client_id", "client_secret"}
    page.locator("button.agentidp-copy").nth(1).click()
    expect(page.locator("button.agentidp-copy").nth(1)).to_have_text("Copied")  # it may wait
    shot(page, "secret-shown-once")
    assert token(make_run, first["client_id"], first["client_secret"]).status_code == 200
    page.goto(agent_page)
    assert first["client_secret"] not in page.content()

    tool(page, "Allowed scopes")
    assert "Register and change agents" in main_text(page)  # each scope with its description
    page.check("input[name=scopes][value='agents:write']")
    page.check("input[name=scopes][value='openid']")
    shot(page, "scopes")
    click(page, "input[type=submit]")
    assert "Saved the scopes browser-bot may ask for." in messages(page)
    issued = token(make_run, first["client_id"], first["client_secret"], "agents:write openid")
    assert issued.status_code == 200 and "id_token" in issued.json()

    with page.expect_navigation():
        page.locator("table.agentidp-detail a").first.click()  # the secret's page
    secret_page = page.url
    tool(page, "Rotate")
    page.check("input[name=grace][value=custom]")
    page.fill("input[name=hours]", "2")
    shot(page, "rotate-grace")
    confirm(page, "Rotate")
    second = shown_once(page)
    assert "keeps working until" in main_text(page)
    shot(page, "rotated")
    assert token(make_run, second["client_id"], second["client_secret"]).status_code == 200
    assert token(make_run, first["client_id"], first["client_secret"]).status_code == 200  # grace

    page.goto(secret_page)
    tool(page, "Revoke")
    shot(page, "revoke-confirm")
    said = confirm(page, "Yes, revoke")
    assert "Revokes 1 secret now" in said and re.search(
        r"Revokes \d+ live tokens? issued with them", said
    )
    assert "Revoked the secret" in messages(page)
    assert token(make_run, first["client_id"], first["client_secret"]).status_code == 401

    live = token(make_run, second["client_id"], second["client_secret"]).json()["access_token"]
    bearer = {"Authorization": f"Bearer {live}"}
    page.goto(agent_page)
    tool(page, "Suspend")
    shot(page, "suspend-confirm")
    said = confirm(page, "Yes, suspend")
    assert (
        re.search(r"Revokes \d+ live tokens? for good", said)
        and "Keeps its 1 active secret" in said
    )
    assert requests.get(f"{base}/agents", headers=bearer, timeout=10).status_code == 401
    tool(page, "Reactivate")
    confirm(page, "Reactivate")
    assert "Reactivated browser-bot" in messages(page)
    assert token(make_run, second["client_id"], second["client_secret"]).status_code == 200
    tool(page, "Decommission")
    said = confirm(page, "Yes, decommission for good")
    assert "Revokes 1 active secret" in said and "410 Gone" in said
    shot(page, "decommissioned")
    assert token(make_run, second["client_id"], second["client_secret"]).status_code == 401

    # --- people ----------------------------------------------------------------------------
    page.goto(f"{base}/admin/organizations/staffmembership/add/")
    page.fill("input[name=username]", "browser-newcomer")
    page.fill("input[name=email]", "newcomer@example.com")
    page.select_option("select[name=role]", "auditor")
    shot(page, "person-add")
    click(page, "input[type=submit][value=Add]")
    link = shown_once(page)["password link"]
    shot(page, "person-link")
    newcomer = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
    newcomer.goto(link)
    newcomer.fill("input[name=new_password1]", "a-newcomer-passphrase-7")
    newcomer.fill("input[name=new_password2]", "a-newcomer-passphrase-7")
    click(newcomer, "input[type=submit]")
    newcomer.close()
    reader = login(browser, make_run, "browser-newcomer", "a-newcomer-passphrase-7")
    readable = main_text(reader)
    for shown in (
        "Audit events",
        "Agents",
        "Webhook subscriptions",
        "Federation partners",
        "People",
    ):
        assert shown in readable, shown  # an auditor reads everything
    assert reader.locator("#content-main a.addlink").count() == 0  # and adds nothing
    reader.close()
    page.goto(f"{base}/admin/organizations/staffmembership/")
    follow(page, "browser-newcomer")
    page.select_option("select[name=role]", "member")
    click(page, "input[name=_save]")
    assert "was changed successfully" in messages(page)
    follow(page, "browser-newcomer")
    tool(page, "Remove from the organization")
    said = confirm(page, "Yes, remove")
    assert "browser-newcomer (member) can no longer log in" in said
    shot(page, "person-removed")

    # --- the organization's settings ---------------------------------------------------------
    page.goto(f"{base}/admin/organizations/organization/")
    assert page.locator("select[name=action] option[value=suspend]").count() == 0
    follow(page, "demo")
    assert page.locator("input[name=plan], select[name=plan], input[name=max_agents]").count() == 0
    page.fill("input[name=access_token_lifetime_seconds]", "600")
    page.fill("input[name=credential_grace_seconds]", "7200")
    page.select_option("select[name=did_key_algorithm]", "P-256")
    shot(page, "organization-settings")
    click(page, "input[name=_save]")
    assert "was changed successfully" in messages(page)

    # --- webhooks ----------------------------------------------------------------------------
    server, statuses = receiver
    page.goto(f"{base}/admin/webhooks/webhooksubscription/add/")
    page.fill("input[name=url]", "http://169.254.169.254/latest/meta-data")
    page.fill("input[name=event_types]", "*")
    click(page, "input[name=_save]")
    refusal = main_text(page)
    assert "The URL is not allowed. Outbound calls go only to public addresses" in refusal
    shot(page, "webhook-refused")
    page.fill("input[name=url]", server.url_for("/hook"))
    click(page, "input[name=_save]")
    assert re.fullmatch(r"whsec_\S+", shown_once(page)[server.url_for("/hook")])
    page.goto(f"{base}/admin/webhooks/webhooksubscription/")
    follow(page, server.url_for("/hook"))
    subscription_page = page.url
    tool(page, "Send a test event")
    confirm(page, "Send the test event")
    eventually(page, lambda: "Succeeded (2xx)" in main_text(page), "the ping is delivered")
    shot(page, "webhook-delivered")
    statuses[0] = 500
    page.goto(subscription_page)
    tool(page, "Send a test event")
    confirm(page, "Send the test event")
    eventually(page, lambda: "Dead letter" in main_text(page), "three failures dead-letter it")
    assert "500" in main_text(page)  # the receiver's answer, each attempt
    shot(page, "webhook-dead-letter")
    statuses[0] = 200
    tool(page, "Replay this dead letter")
    confirm(page, "Send again")
    eventually(page, lambda: "Succeeded (2xx)" in main_text(page), "the replay is delivered")
    page.goto(subscription_page)
    click(page, "a.deletelink")
    said = main_text(page)
    assert re.search(r"Deletes its \d+ delivery records: \d+ pending deliver", said)
    shot(page, "webhook-delete-confirm")
    confirm(page, "Yes, delete")
    assert "Deleted" in messages(page)

    # --- federation --------------------------------------------------------------------------
    page.goto(f"{base}/admin/federation/federationpartner/add/")
    page.fill("input[name=issuer]", partner_run.base)
    page.check("input[name=allowed_scopes][value='agents:read']")
    click(page, "input[name=_save]")
    assert "was added successfully" in messages(page), main_text(page)
    listing = page.locator("#result_list").inner_text()
    shot(page, "partner-added")
    assert partner_run.base in listing and "OK, " in listing, listing  # its keys' fetch
    follow(page, partner_run.base)
    click(page, "a.deletelink")
    assert "its tokens are refused from now on" in main_text(page)
    confirm(page, "Yes, delete")

    # --- the audit log -------------------------------------------------------------------------
    page.goto(f"{base}/admin/compliance/auditevent/")
    shot(page, "audit-log")
    table = page.locator("#result_list").inner_text()
    assert "demo-admin (owner)" in table, "the person, by name and role"
    assert "user " not in table
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"the audit list is {width}px wide at 1366px"
    clipped = page.evaluate(
        "[...document.querySelectorAll('#result_list td, #result_list th')]"
        ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.className)"
    )
    assert clipped == [], f"clipped cells: {clipped}"
    assert "browser-other" not in page.content() and "secret-project" not in page.content()
    follow(page, "demo-admin (owner)", within="#changelist-filter")
    actors = page.locator("#result_list td.field-actor").all_inner_texts()
    assert actors and set(actors) == {"demo-admin (owner)"}
    exported = download(page, "Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(exported).read_text())))
    assert rows and {r["actor"] for r in rows} == {"demo-admin (owner)"}
    assert all(len(r["hash"]) == 64 for r in rows)
    page.goto(f"{base}/admin/oidc/accesstoken/")
    assert page.title().startswith("Select access token"), "no 403 for what the index shows"
    page.close()


def test_platform_staff_see_and_filter_every_organization(
    browser: Browser, make_run: Stack, other_organization: dict[str, Any], artifacts: Path
) -> None:
    shot = Shots(artifacts)
    page = login(browser, make_run, "platform-admin", make_run.credentials()["platform_password"])
    navigation = main_text(page)
    for meaningless in ("Grants", "Id tokens", "Refresh tokens", "Groups", "Solar", "Clocked"):
        assert meaningless not in navigation
    assert "Periodic tasks" in navigation and "Access tokens" in navigation
    page.goto(f"{make_run.base}/admin/agents/agent/")
    everything = page.locator("#result_list").inner_text()
    assert "demo-agent" in everything and "secret-project" in everything
    shot(page, "platform-agents")
    follow(page, "browser-other", within="#changelist-filter")
    filtered = page.locator("#result_list").inner_text()
    assert "secret-project" in filtered and "demo-agent" not in filtered
    shot(page, "platform-agents-filtered")
    page.goto(f"{make_run.base}/admin/organizations/staffmembership/")
    people = page.locator("#result_list").inner_text()
    assert "demo-admin" in people and "Owner" in people, "people by name and role"
    # An operator runs a beat job now, from its schedule's page, and reads the run it left.
    page.goto(f"{make_run.base}/admin/django_celery_beat/periodictask/")
    row = page.locator("#result_list tr", has_text="Outbox health")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "run_tasks")
    click(page, "button[name=index]")
    assert "was successfully run" in messages(page), main_text(page)
    page.goto(f"{make_run.base}/admin/compliance/jobrun/")
    eventually(page, lambda: page.locator("#result_list").count() > 0, "the job's run recorded")
    shot(page, "platform-job-runs")
    assert "outbox" in page.locator("#result_list").inner_text()
    assert re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", page.locator("#result_list").inner_text()) is None
    page.close()


def test_an_auditor_reads_everything_and_downloads_the_report(
    browser: Browser, make_run: Stack, artifacts: Path
) -> None:
    shot = Shots(artifacts)
    made = make_run.manage("createstaff", "--org", "demo", "browser-auditor", "--role", "auditor")
    assert made.returncode == 0, made.stderr
    page = login(browser, make_run, "browser-auditor", json.loads(made.stdout)["password"])
    shot(page, "auditor-index")
    index = main_text(page)
    for shown in (
        "Audit events",
        "Agents",
        "Client secrets",
        "Organizations",
        "Webhook",
        "Federation",
    ):
        assert shown in index, shown

    follow(page, "Audit events", within="#content-main")
    tool(page, "Compliance report")
    shot(page, "auditor-report")
    controls = page.locator("#content-main table").inner_text()
    for control in ("Encryption at rest", "Encryption in transit (TLS)", "Access review"):
        assert control in controls
    with page.expect_download() as started:
        page.click("button[value=pdf]")
    download = started.value
    assert download.suggested_filename == "agentidp-compliance-demo.pdf"
    saved = artifacts / download.suggested_filename
    download.save_as(saved)
    text = "\n".join(p.extract_text() for p in PdfReader(saved).pages)
    assert "Encryption at rest" in text and "Access review" in text
    assert "demo-admin" in text, "the members and their roles"
    page.goto(f"{make_run.base}/admin/agents/agent/add/")
    assert "403" in page.title() or "Forbidden" in page.content() or "404" in page.title()
    page.close()
