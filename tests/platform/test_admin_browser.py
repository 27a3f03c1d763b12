"""The admin in a real browser (Playwright driving Debian's Chromium) against a live
``make run``: organization staff and platform staff doing their work, and organization staff
never seeing another organization's rows. Screenshots land in the test's temporary folder."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from pypdf import PdfReader

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
    agent = make_run.manage("createagent", "--org", "browser-other", "secret-project")
    assert agent.returncode == 0, agent.stderr
    document: dict[str, Any] = json.loads(agent.stdout)
    return document


def login(browser: Browser, stack: Stack, username: str, password: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{stack.base}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{stack.base}/admin/")
    return page


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_organization_staff_run_their_organization(
    browser: Browser, make_run: Stack, other_organization: dict[str, Any], tmp_path: Path
) -> None:
    page = login(browser, make_run, "demo-admin", make_run.credentials()["staff_password"])
    assert page.title().endswith("AgentIdP")
    assert page.locator("#site-name").inner_text() == "AgentIdP administration"
    shot(page, tmp_path, "staff-index")
    index = page.locator("#content-main").inner_text()
    for meaningless in ("Grants", "Id tokens", "Refresh tokens", "Groups", "Solar"):
        assert meaningless not in index

    page.locator("a[href='/admin/agents/agent/']").first.click()
    agents = page.locator("#result_list").inner_text()
    shot(page, tmp_path, "staff-agents")
    assert "demo-agent" in agents
    assert "secret-project" not in agents, "another organization's agent"
    assert "Other Org" not in page.content()

    page.click("#result_list >> text=demo-agent")
    shot(page, tmp_path, "staff-agent")
    detail = page.locator("#content-main").inner_text()
    assert "Demo organization (demo)" in detail
    assert "agents:read agents:write audit:read credentials:write" in detail
    secret = make_run.credentials()["agent_client_secret"]
    assert secret[:12] in detail, "the secret's prefix identifies it"
    assert secret not in page.content(), "never the secret itself"
    assert "agent.created" in detail and "credential.generated" in detail, "recent events"

    capabilities = page.locator("textarea[name=capabilities]")
    assert capabilities.input_value().splitlines() == ["search", "summarize"]
    capabilities.fill("search\nsummarize\nplan\n")
    page.click("input[name=_continue]")
    assert page.locator("textarea[name=capabilities]").input_value().splitlines() == [
        "search",
        "summarize",
        "plan",
    ]

    page.goto(f"{make_run.base}/admin/agents/agent/{other_organization['id']}/change/")
    assert "secret-project" not in page.content()
    assert "doesn’t exist" in page.content() or page.url.endswith("/admin/")

    page.goto(f"{make_run.base}/admin/compliance/auditevent/")
    shot(page, tmp_path, "staff-audit")
    table = page.locator("#result_list")
    assert "agent " in table.inner_text(), "the actor column is on the page"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the audit list is {width}px wide in a 1280px window"
    assert "browser-other" not in page.content()
    page.close()


def test_platform_staff_see_and_filter_every_organization(
    browser: Browser, make_run: Stack, other_organization: dict[str, Any], tmp_path: Path
) -> None:
    page = login(browser, make_run, "platform-admin", make_run.credentials()["platform_password"])
    navigation = page.locator("#content-main").inner_text()
    for meaningless in ("Grants", "Id tokens", "Refresh tokens", "Groups", "Solar", "Clocked"):
        assert meaningless not in navigation
    assert "Periodic tasks" in navigation and "Access tokens" in navigation
    page.goto(f"{make_run.base}/admin/agents/agent/")
    everything = page.locator("#result_list").inner_text()
    assert "demo-agent" in everything and "secret-project" in everything
    shot(page, tmp_path, "platform-agents")

    page.locator("#changelist-filter").get_by_role("link", name="browser-other").click()
    filtered = page.locator("#result_list").inner_text()
    assert "secret-project" in filtered and "demo-agent" not in filtered
    shot(page, tmp_path, "platform-agents-filtered")

    page.goto(f"{make_run.base}/admin/organizations/organization/")
    organizations = page.locator("#result_list").inner_text()
    assert "demo" in organizations and "browser-other" in organizations
    page.click("#result_list >> text=demo")
    memberships = page.locator(".inline-group").inner_text()
    assert "demo-admin (owner)" in memberships, "staff by name, not by id"
    page.close()


def test_an_auditor_downloads_the_compliance_report(
    browser: Browser, make_run: Stack, tmp_path: Path
) -> None:
    made = make_run.manage("createstaff", "--org", "demo", "browser-auditor", "--role", "auditor")
    assert made.returncode == 0, made.stderr
    page = login(browser, make_run, "browser-auditor", json.loads(made.stdout)["password"])
    shot(page, tmp_path, "auditor-index")
    index = page.locator("#content-main").inner_text()
    assert "Audit events" in index
    for hidden in ("Agents", "Client secrets", "Organizations", "Webhook", "Federation"):
        assert hidden not in index, hidden

    page.click("#content-main >> text=Audit events")
    page.click("text=Compliance report")
    shot(page, tmp_path, "auditor-report")
    controls = page.locator("#content-main table").inner_text()
    for control in ("Encryption at rest", "Encryption in transit (TLS)", "Access review"):
        assert control in controls
    with page.expect_download() as started:
        page.click("button[value=pdf]")
    download = started.value
    assert download.suggested_filename == "agentidp-compliance-demo.pdf"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    text = "\n".join(p.extract_text() for p in PdfReader(saved).pages)
    assert "Encryption at rest" in text and "Access review" in text
    assert "demo-admin" in text, "the members and their roles"
    page.goto(f"{make_run.base}/admin/agents/agent/")
    assert "403" in page.title() or "Forbidden" in page.content()
    page.close()
