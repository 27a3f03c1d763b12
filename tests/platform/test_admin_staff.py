"""An organization's owner runs it in the admin alone, through a real login: an agent from
registration to decommissioning, its secrets and scopes, the organization's people and
settings. Every destructive step asks first, in numbers, and is audited under the person's
name."""

import html
import re
import uuid
from collections.abc import Mapping
from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from compliance.models import AuditEvent
from credentials.models import ClientSecret
from organizations.choices import MemberRole, Scope
from organizations.models import Organization, StaffMembership
from tests.factories import StaffFactory
from tests.oidc.conftest import Credentialed, basic, credentialed, request_token
from tests.platform.test_admin import _login, shown_once

AGENTS = "/admin/agents/agent/"
PEOPLE = "/admin/organizations/staffmembership/"


def _page(client: Client, path: str, data: Mapping[str, object] | None = None) -> str:
    response = client.post(path, data or {}) if data is not None else client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.content.decode()


def _text(page: str) -> str:
    """The page's words, without tags, for reading sentences that span markup."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def _events(organization: Organization, action: str) -> list[AuditEvent]:
    with tenant_context(organization.id):
        return list(
            AuditEvent.objects.filter(organization_id=organization.id, action=action).order_by(
                "sequence"
            )
        )


def _by(event: AuditEvent, user: User, role: str = "owner") -> bool:
    return event.actor_id == str(user.pk) and event.data["actor"] == {
        "username": user.username,
        "role": role,
    }


def _secret_of(organization: Organization, agent_id: uuid.UUID) -> ClientSecret:
    with tenant_context(organization.id):
        return ClientSecret.objects.filter(client__agent_id=agent_id).latest("created_at")


def test_an_owner_onboards_an_agent_without_a_shell(staff: User, org: Organization) -> None:
    client = _login(staff)
    added = client.post(
        f"{AGENTS}add/",
        {
            "name": "billing-bot",
            "description": "Answers billing questions",
            "capabilities": "billing\r\nrefunds",
            "skills": "invoice-lookup: finds an invoice by number [billing]",
            "metadata": "{}",
            "version": "1.0.0",
            "authors": "",
        },
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    with tenant_context(org.id):
        agent = Agent.objects.get(organization_id=org.id, name="billing-bot")
    page = f"{AGENTS}{agent.id}/change/"
    assert added["Location"] == page  # straight to the agent, where its secret is issued next
    assert agent.skills == [
        {"id": "invoice-lookup", "name": "invoice-lookup", "description": "finds an invoice by number", "tags": ["billing"]}
    ]  # fmt: skip
    assert f"{AGENTS}{agent.id}/secret/" in _page(client, page)

    # the first secret: asked, then shown once with the client_id beside it
    asked = _page(client, f"{AGENTS}{agent.id}/secret/")
    assert "Issue the secret" in asked and "0 active secrets" in _text(asked)
    issued = client.post(f"{AGENTS}{agent.id}/secret/", {"confirmed": "yes", "expires_at": ""})
    assert issued.status_code == 200 and "no-store" in issued["Cache-Control"]
    shown = shown_once(issued.content.decode())
    assert set(shown) == {"client_id", "client_secret"}
    assert 'class="button agentidp-copy"' in issued.content.decode()  # a copy button each
    assert shown["client_secret"] not in _page(client, page)  # never again
    token = request_token(auth=basic(shown["client_id"], shown["client_secret"]))
    assert token.status_code == 200 and token.json()["scope"] == "agents:read"

    # the scopes it may ask for, from the catalogue with each description
    catalogue = _text(_page(client, f"{AGENTS}{agent.id}/scopes/"))
    for scope in (Scope.AGENTS_WRITE, Scope.WEBHOOKS_READ, Scope.OPENID):
        assert scope.value in catalogue and str(scope.label) in catalogue
    assert Scope.ADMIN_ORGS.value not in catalogue  # platform staff's only
    saved = client.post(
        f"{AGENTS}{agent.id}/scopes/", {"scopes": ["agents:read", "agents:write", "openid"]}
    )
    assert saved.status_code == 302
    auth = basic(shown["client_id"], shown["client_secret"])
    assert request_token(auth=auth, scope="agents:write").status_code == 200
    assert request_token(auth=auth, scope="audit:read").json()["error"] == "invalid_scope"
    refused = _page(client, f"{AGENTS}{agent.id}/scopes/", {"scopes": ["admin:orgs"]})
    assert "admin:orgs is not one of the available choices" in refused
    (generated,) = _events(org, "credential.generated")
    (scoped,) = _events(org, "credential.scopes_changed")
    assert (
        _by(generated, staff)
        and _by(scoped, staff)
        and _by(_events(org, "agent.created")[0], staff)
    )


def test_a_secret_is_rotated_with_the_grace_the_owner_chooses(
    staff: User, org: Organization
) -> None:
    cred = credentialed(org)
    client = _login(staff)
    rotate = f"/admin/credentials/clientsecret/{cred.credential_id}/rotate/"
    asked = _text(_page(client, rotate))
    assert "None: the old secret stops now" in asked
    assert f"The organization's default ({org.credential_grace_seconds / 3600:g} hours)" in asked
    too_long = _page(client, rotate, {"confirmed": "yes", "grace": "custom", "hours": "721"})
    assert "less than or equal to 720" in too_long
    no_hours = _page(client, rotate, {"confirmed": "yes", "grace": "custom", "hours": ""})
    assert "How many hours?" in no_hours
    assert _secret_of(org, cred.agent.id).id == cred.credential_id  # nothing rotated yet

    before = timezone.now()
    new = shown_once(_page(client, rotate, {"confirmed": "yes", "grace": "custom", "hours": "2"}))
    with tenant_context(org.id):
        old = ClientSecret.objects.get(id=cred.credential_id)
    assert old.expires_at is not None
    assert abs(old.expires_at - (before + timedelta(hours=2))) < timedelta(minutes=1)
    assert request_token(cred).status_code == 200  # the old secret, in its grace
    newest = _secret_of(org, cred.agent.id)
    again = f"/admin/credentials/clientsecret/{newest.id}/rotate/"
    third = shown_once(_page(client, again, {"confirmed": "yes", "grace": "none"}))
    assert request_token(auth=basic(new["client_id"], new["client_secret"])).status_code == 401
    assert request_token(auth=basic(third["client_id"], third["client_secret"])).status_code == 200
    rotations = _events(org, "credential.rotated")
    assert len(rotations) == 2 and all(_by(e, staff) for e in rotations)


def test_revoking_a_secret_says_what_it_ends(staff: User, org: Organization) -> None:
    cred = credentialed(org)
    for _ in range(2):
        assert request_token(cred).status_code == 200
    client = _login(staff)
    revoke = f"/admin/credentials/clientsecret/{cred.credential_id}/revoke/"
    asked = _text(_page(client, revoke))
    assert "Revokes 1 secret now" in asked and "Revokes 2 live tokens" in asked
    assert request_token(cred).status_code == 200  # nothing before the answer
    assert client.post(revoke, {"confirmed": "yes"}).status_code == 302
    assert request_token(cred).status_code == 401
    (revoked,) = _events(org, "credential.revoked")
    assert _by(revoked, staff)


def _live_tokens(cred: Credentialed, count: int) -> list[str]:
    tokens = []
    for _ in range(count):
        response = request_token(cred)
        assert response.status_code == 200
        tokens.append(response.json()["access_token"])
    return tokens


def _works(token: str) -> bool:
    return Client().get("/agents", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_suspend_reactivate_and_decommission_from_the_agents_page(
    staff: User, org: Organization
) -> None:
    cred = credentialed(org)
    credential_second = request_token(cred)  # a second secret would be counted too
    assert credential_second.status_code == 200
    tokens = _live_tokens(cred, 2)
    client = _login(staff)
    page = f"{AGENTS}{cred.agent.id}/"
    asked = _text(_page(client, f"{page}suspend/"))
    assert f"Suspend {cred.agent.name}?" in asked
    assert "Revokes 3 live tokens for good" in asked and "Keeps its 1 active secret" in asked
    assert all(_works(t) for t in tokens)  # nothing before the answer
    assert client.post(f"{page}suspend/", {"confirmed": "yes"}).status_code == 302
    assert not any(_works(t) for t in tokens)
    assert request_token(cred).json()["error"] == "invalid_client"

    assert "/reactivate/" in _page(client, f"{page}change/")
    assert client.post(f"{page}reactivate/", {"confirmed": "yes"}).status_code == 302
    fresh = _live_tokens(cred, 1)
    assert _works(fresh[0])

    revoke_all = _text(_page(client, f"{page}revoke-tokens/"))
    assert "Revokes 1 live token of" in revoke_all
    assert client.post(f"{page}revoke-tokens/", {"confirmed": "yes"}).status_code == 302
    assert not _works(fresh[0]) and request_token(cred).status_code == 200

    final = _text(_page(client, f"{page}decommission/"))
    assert "Revokes 1 active secret and 1 live token" in final
    assert "its documents answer 410 Gone" in final
    assert client.post(f"{page}decommission/", {"confirmed": "yes"}).status_code == 302
    with tenant_context(org.id):
        assert Agent.objects.get(id=cred.agent.id).status == "decommissioned"
    assert client.get(f"{page}reactivate/").status_code == 404  # not offered, not reachable
    for action in (
        "agent.suspended",
        "agent.reactivated",
        "agent.tokens_revoked",
        "agent.decommissioned",
    ):
        (event,) = _events(org, action)
        assert _by(event, staff), action
    (revoked,) = _events(org, "agent.tokens_revoked")
    assert revoked.data["tokens"] == 1


def test_bulk_lifecycle_actions_count_every_selected_agent(staff: User, org: Organization) -> None:
    first, second = credentialed(org), credentialed(org)
    _live_tokens(first, 2)
    _live_tokens(second, 1)
    client = _login(staff)
    selected = {
        "action": "decommission",
        "_selected_action": [str(first.agent.id), str(second.agent.id)],
    }
    asked = _text(_page(client, AGENTS, selected))
    assert "Revokes 2 active secrets and 3 live tokens" in asked
    assert first.agent.name in asked and second.agent.name in asked
    done = client.post(AGENTS, {**selected, "confirmed": "yes"}, follow=True).content.decode()
    assert "Decommissioned 2" in done


def _invite(client: Client, username: str, role: str) -> dict[str, str]:
    response = client.post(
        f"{PEOPLE}add/", {"username": username, "email": f"{username}@example.com", "role": role}
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    return shown_once(response.content.decode())


def _set_password(link: str, password: str) -> None:
    path = link.split("://", 1)[1].split("/", 1)[1]
    browser = Client()
    form = browser.get(f"/{path}", follow=True)  # Django moves the token into the session
    assert form.status_code == 200 and "new_password1" in form.content.decode()
    done = browser.post(
        form.redirect_chain[-1][0], {"new_password1": password, "new_password2": password}
    )
    assert done.status_code == 302, done.content.decode()[:2000]


def _membership(org: Organization, username: str) -> StaffMembership:
    with platform_context(reason="tests"):
        return StaffMembership.objects.select_related("user").get(
            organization_id=org.id, user__username=username
        )


def test_people_are_added_given_roles_and_removed(staff: User, org: Organization) -> None:
    client = _login(staff)
    shown = _invite(client, "alice", MemberRole.AUDITOR)
    link = shown["password link"]
    assert link.startswith("http") and "/admin/password/set/" in link
    _set_password(link, "a-long-enough-passphrase")
    alice = Client()
    assert (
        alice.post(
            "/admin/login/", {"username": "alice", "password": "a-long-enough-passphrase"}
        ).status_code
        == 302
    )
    assert alice.get("/admin/compliance/auditevent/").status_code == 200  # an auditor now
    assert alice.get(f"{PEOPLE}add/").status_code in {403, 404}  # who reads cannot add
    again = client.post(f"{PEOPLE}add/", {"username": "Alice", "email": "", "role": "member"})
    assert "Already someone" in again.content.decode()

    membership = _membership(org, "alice")
    change = f"{PEOPLE}{membership.pk}/change/"
    assert client.post(change, {"role": MemberRole.ADMIN}).status_code == 302
    assert _membership(org, "alice").role == MemberRole.ADMIN
    assert alice.get(f"{PEOPLE}add/").status_code == 200  # an admin manages people

    remove = f"{PEOPLE}{membership.pk}/remove/"
    asked = _text(_page(client, remove))
    assert "alice (admin) can no longer log in" in asked
    assert client.post(remove, {"confirmed": "yes"}).status_code == 302
    assert alice.get("/admin/").status_code == 302  # the session no longer logs in
    with platform_context(reason="tests"):
        assert not StaffMembership.objects.filter(id=membership.pk).exists()
        assert not User.objects.get(username="alice").is_active
    events = [
        e
        for a in ("member.added", "member.role_changed", "member.removed")
        for e in _events(org, a)
    ]
    assert [e.data["username"] for e in events] == [staff.username, "alice", "alice", "alice"]
    assert all(_by(e, staff) for e in events[1:])  # the owner's own creation was the factory's


def test_the_last_owner_stays_and_admins_do_not_make_owners(staff: User, org: Organization) -> None:
    owner = _login(staff)
    mine = _membership(org, staff.username)
    demoted = owner.post(f"{PEOPLE}{mine.pk}/change/", {"role": MemberRole.ADMIN}, follow=True)
    assert "The last owner cannot be demoted" in demoted.content.decode()
    removed = owner.post(f"{PEOPLE}{mine.pk}/remove/", {"confirmed": "yes"}, follow=True)
    assert "The last owner cannot be removed" in removed.content.decode()
    assert _membership(org, staff.username).role == MemberRole.OWNER

    admin_user = StaffFactory(organization=org, role=MemberRole.ADMIN)
    admin = _login(admin_user)
    refused = admin.post(f"{PEOPLE}add/", {"username": "mallory", "email": "", "role": "owner"})
    assert "Only an owner makes someone an owner" in refused.content.decode()
    own = _membership(org, admin_user.username)
    promoted = admin.post(f"{PEOPLE}{own.pk}/change/", {"role": MemberRole.OWNER}, follow=True)
    assert "Only an owner makes someone an owner" in promoted.content.decode()
    coup = admin.post(f"{PEOPLE}{mine.pk}/remove/", {"confirmed": "yes"}, follow=True)
    assert "Only an owner" in coup.content.decode()
    self_removal = admin.post(f"{PEOPLE}{own.pk}/remove/", {"confirmed": "yes"}, follow=True)
    assert "You cannot remove yourself" in self_removal.content.decode()
    with platform_context(reason="tests"):
        assert not User.objects.filter(username="mallory").exists()
    assert _membership(org, admin_user.username).role == MemberRole.ADMIN


def test_a_member_cannot_manage_people(org: Organization, staff: User) -> None:
    member = _login(StaffFactory(organization=org, role=MemberRole.MEMBER))
    listing = _page(member, PEOPLE)
    assert staff.username in listing and f"{PEOPLE}add/" not in listing
    mine = _membership(org, staff.username)
    assert f"{PEOPLE}{mine.pk}/remove/" not in _page(member, f"{PEOPLE}{mine.pk}/change/")
    assert member.post(f"{PEOPLE}{mine.pk}/remove/", {"confirmed": "yes"}).status_code == 404
    assert member.post(f"{PEOPLE}add/", {"username": "x", "role": "owner"}).status_code in {
        403,
        404,
    }
    assert member.post(f"{PEOPLE}{mine.pk}/change/", {"role": "member"}).status_code == 403
    assert _membership(org, staff.username).role == MemberRole.OWNER


def test_an_owner_sets_the_organizations_own_settings_only(staff: User, org: Organization) -> None:
    client = _login(staff)
    page = f"/admin/organizations/organization/{org.id}/change/"
    form = _page(client, page)
    for editable in (
        "access_token_lifetime_seconds",
        "credential_grace_seconds",
        "did_key_algorithm",
        "delegation_max_depth",
        "attestation_period_days",
    ):
        assert f'name="{editable}"' in form, editable
    for platform_only in ("plan", "max_agents", "max_tokens_per_month"):
        assert f'name="{platform_only}"' not in form, platform_only  # shown, not editable
    saved = client.post(
        page,
        {"name": org.name, "access_token_lifetime_seconds": "600", "credential_grace_seconds": "7200",
         "did_key_algorithm": "P-256", "delegation_max_depth": "2", "plan": "enterprise",
         "max_agents": "99999", "attestation_period_days": "30"},
    )  # fmt: skip
    assert saved.status_code == 302, saved.content.decode()[:2000]
    with platform_context(reason="tests"):
        changed = Organization.objects.get(id=org.id)
    assert (changed.access_token_lifetime_seconds, changed.credential_grace_seconds) == (600, 7200)
    assert changed.did_key_algorithm == "P-256" and changed.delegation_max_depth == 2
    assert changed.attestation_period_days == 30
    assert (changed.plan, changed.max_agents) == (org.plan, org.max_agents)  # ignored
    bad = _page(client, page, {"name": org.name, "access_token_lifetime_seconds": "5",
                               "credential_grace_seconds": "7200", "did_key_algorithm": "P-256",
                               "delegation_max_depth": "2", "attestation_period_days": "30"})  # fmt: skip
    assert "greater than or equal to 60" in bad
    (updated,) = _events(org, "organization.updated")
    assert _by(updated, staff)

    # suspending is not theirs: neither offered nor accepted
    listing = _page(client, "/admin/organizations/organization/")
    assert 'value="suspend"' not in listing
    client.post(
        "/admin/organizations/organization/",
        {"action": "suspend", "_selected_action": [str(org.id)], "confirmed": "yes"},
    )
    with platform_context(reason="tests"):
        assert Organization.objects.get(id=org.id).status == "active"


def test_platform_staff_suspend_an_organization_after_the_numbers(
    superuser: User, org: Organization
) -> None:
    StaffFactory(organization=org, role=MemberRole.OWNER)  # who sponsors its agent
    cred = credentialed(org)
    _live_tokens(cred, 2)
    client = _login(superuser)
    selected = {"action": "suspend", "_selected_action": [str(org.id)]}
    asked = _text(_page(client, "/admin/organizations/organization/", selected))
    assert (
        f"{org.name}: its 1 agent get no tokens, its 2 live tokens are refused and its 1 person"
        in asked
    )
    assert (
        client.post(
            "/admin/organizations/organization/", {**selected, "confirmed": "yes"}
        ).status_code
        == 302
    )
    with platform_context(reason="tests"):
        assert Organization.objects.get(id=org.id).status == "suspended"
    (suspended,) = _events(org, "organization.suspended")
    assert _by(suspended, superuser, role="platform")


def test_a_refused_registration_is_a_form_error_with_what_was_typed(
    staff: User, org: Organization, agent: Agent, superuser: User
) -> None:
    form = {"name": agent.name, "description": "typed by hand", "capabilities": "", "metadata": "{}",
            "version": "1.0.0", "skills": "", "authors": ""}  # fmt: skip
    page = _page(_login(staff), f"{AGENTS}add/", form)
    assert "An agent with this name exists in the organization." in page
    assert "typed by hand" in page  # the form comes back as it was
    platform = _login(superuser)
    unplaced = _page(platform, f"{AGENTS}add/", {**form, "name": "nowhere"})
    assert "This field is required." in unplaced
    placed = platform.post(
        f"{AGENTS}add/", {**form, "name": "placed", "for_organization": str(org.id)}
    )
    assert placed.status_code == 302
    with tenant_context(org.id):
        assert Agent.objects.filter(organization_id=org.id, name="placed").exists()
        assert Agent.objects.filter(organization_id=org.id).count() == 2


def test_what_platform_staff_are_asked_is_not_asked_of_the_next_person(
    superuser: User, staff: User, org: Organization
) -> None:
    """A form's declared fields are shared by every form class the admin makes: the choice of
    organization platform staff must make stays theirs."""
    platform = _login(superuser)
    for page in (
        f"{AGENTS}add/",
        "/admin/webhooks/webhooksubscription/add/",
        "/admin/federation/federationpartner/add/",
    ):
        assert 'name="for_organization"' in _page(platform, page), page
    owner = _login(staff)
    for page in (
        f"{AGENTS}add/",
        "/admin/webhooks/webhooksubscription/add/",
        "/admin/federation/federationpartner/add/",
    ):
        assert 'name="for_organization"' not in _page(owner, page), page
    form = {"name": "after-platform", "description": "", "capabilities": "", "metadata": "{}",
            "version": "1.0.0", "skills": "", "authors": ""}  # fmt: skip
    assert owner.post(f"{AGENTS}add/", form).status_code == 302
