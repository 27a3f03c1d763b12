"""The SSRF guard as an attacker meets it: hostile URLs in every spelling refused when a
subscription is made and again at delivery, DNS rebinding refused, redirects not followed, a
hanging or huge answer failing cleanly. Only 127.0.0.2 is allowlisted in this run."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from rest_framework.test import APIClient
from werkzeug import Request, Response

from agentidp.outbound import Limits, UrlRefused, outbound_request, url_check
from agentidp.tenancy import tenant_context
from organizations.models import Organization
from tests.factories import AgentFactory
from tests.webhooks import resolver
from tests.webhooks.conftest import Receiver, agentidp_override, subscribe
from webhooks.delivery import deliveries_send
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.relay import relay_run

PUBLIC = "93.184.215.14"

HOSTILE = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://localhost./hook",
    "https://127.0.0.1./hook",
    "https://2130706433/hook",  # decimal
    "https://0x7f000001/hook",  # hex
    "https://0177.0.0.1/hook",  # octal
    "https://0x7f.0.0.1/hook",
    "https://127.1/hook",  # short forms
    "https://127.0.1/hook",
    "https://127.000.000.001/hook",
    "https://0/hook",
    "https://0.0.0.0/hook",
    "https://[::1]/hook",
    "https://[0:0:0:0:0:0:0:1]/hook",
    "https://[::]/hook",
    "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "https://[::ffff:7f00:1]/hook",
    "https://[::127.0.0.1]/hook",  # IPv4-compatible
    "https://[64:ff9b::7f00:1]/hook",  # NAT64
    "https://[2002:7f00:1::]/hook",  # 6to4
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
    "https://169.254.169.254/latest/meta-data/",
    "https://0251.0376.0251.0376/latest/meta-data/",  # octal metadata
    "https://0xa9fea9fe/latest/meta-data/",  # hex metadata
    "https://2852039166/latest/meta-data/",  # decimal metadata
    "https://[::ffff:169.254.169.254]/latest/meta-data/",
    "https://[fe80::1]/hook",
    "https://10.0.0.1/hook",
    "https://172.16.0.1/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # CGNAT
    "https://224.0.0.1/hook",  # multicast
    "https://240.0.0.1/hook",  # reserved
    "https://255.255.255.255/hook",
    "https://[fc00::1]/hook",  # unique local
    "https://[ff02::1]/hook",
    "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",  # full-width digits (IDN)
    "https://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/hook",  # circled "localhost"
    "https://user:secret@public.test/hook",  # credentials
    "https://public.test@127.0.0.1/hook",
    "ftp://public.test/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "https://public.test:6379/hook",  # a port other than 443 and 80
    "https://mixed.test/hook",  # one public and one private address
    "https://127.0.0.2.nip.test/hook",  # a name (not the allowlisted address) answering loopback
    "https://public.test/" + "a" * 2048,  # over 2,048 characters
]


@pytest.fixture(autouse=True)
def test_resolver() -> Iterator[None]:
    restore = agentidp_override(SSRF_RESOLVER="tests.webhooks.resolver.resolve")
    resolver.answers.clear()
    resolver.answers.update(
        {
            "public.test": [[PUBLIC]],
            "mixed.test": [[PUBLIC, "10.1.2.3"]],
            "127.0.0.2.nip.test": [["127.0.0.1"]],
        }
    )
    yield
    restore()
    resolver.answers.clear()


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_url_is_refused_by_the_guard(url: str) -> None:
    with pytest.raises(UrlRefused):
        url_check(url)


def test_at_least_thirty_spellings_are_covered() -> None:
    assert len(HOSTILE) >= 30


def test_a_public_https_url_and_the_allowlisted_address_pass() -> None:
    assert [str(a) for a in url_check("https://public.test/hook").addresses] == [PUBLIC]
    checked = url_check("http://127.0.0.2:8080/hook")  # allowlisted; http and 8080 allowed here
    assert [str(a) for a in checked.addresses] == ["127.0.0.2"]


def test_the_allowlist_relaxes_the_address_rule_only() -> None:
    """An allowlisted address still meets the scheme and port rules, and the ports of this
    deployment's own services (its Redis, its Vault, PostgreSQL, the brokers) stay refused
    whatever ports are allowed."""
    redis_port = urlsplit(settings.REDIS_URL).port or 6379
    vault_port = urlsplit(str(settings.AGENTIDP["VAULT"]["ADDR"])).port
    for port in {6379, 5432, 8200, 4222, 9092, 5672, redis_port, vault_port}:
        with pytest.raises(UrlRefused):
            url_check(f"http://127.0.0.2:{port}/")
        with pytest.raises(UrlRefused):
            url_check(f"https://public.test:{port}/")
    restore = agentidp_override(WEBHOOK_ALLOW_HTTP=False, SSRF_ALLOWED_PORTS=["443"])
    try:
        for url in ("http://127.0.0.2/hook", "http://public.test/hook", "https://127.0.0.2:8080/"):
            with pytest.raises(UrlRefused):
                url_check(url)
        assert url_check("https://127.0.0.2/hook").addresses
    finally:
        restore()


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_url_is_refused_at_subscription(
    url: str, api: APIClient, org: Organization
) -> None:
    response = api.post("/webhooks", {"url": url, "event_types": ["agent.*"]}, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert "url" in response.json()["errors"]
    with tenant_context(org.id):
        assert not WebhookSubscription.objects.filter(organization_id=org.id).exists()


def test_a_refusal_does_not_tell_whether_a_port_is_open(api: APIClient) -> None:
    # 5432 has PostgreSQL listening, 1 has nothing: the answers are the same
    bodies = []
    for port in (5432, 1):
        body = {"url": f"https://127.0.0.1:{port}/", "event_types": ["*"]}
        response = api.post("/webhooks", body, format="json")
        assert response.status_code == 400
        bodies.append(response.json()["errors"])
    assert bodies[0] == bodies[1]
    (message,) = bodies[0]["url"]
    assert message.startswith("The URL is not allowed.")
    assert "public addresses" in message and "169.254.169.254" in message  # the rules, not why


@pytest.mark.parametrize("url", [u for u in HOSTILE if len(u) <= 2048 and "@" not in u])
def test_hostile_url_is_refused_at_delivery(
    url: str, org: Organization, receiver: Receiver
) -> None:
    issued = subscribe(org, receiver, ["agent.created"])
    with tenant_context(org.id):  # as if it had been accepted once and changed since
        WebhookSubscription.objects.filter(id=issued.subscription.id).update(url=url)
    AgentFactory(organization=org)
    relay_run(organization_id=org.id)
    deliveries_send(organization_id=org.id)
    with tenant_context(org.id):
        attempts = list(WebhookAttempt.objects.filter(organization_id=org.id))
    assert attempts and {(a.outcome, a.http_status) for a in attempts} == {("refused", None)}
    assert receiver.received == []


def test_dns_rebinding_is_refused_at_delivery(org: Organization, receiver: Receiver) -> None:
    # public when the subscription is made, loopback (where the receiver is) at delivery
    resolver.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
    url = f"http://rebind.test:{receiver.server.port}/hook"
    restore = agentidp_override(
        WEBHOOK_ALLOW_HTTP=True, SSRF_ALLOWED_PORTS=[str(receiver.server.port)]
    )
    try:
        subscribe_url = subscribe(org, receiver, ["agent.created"])
        with tenant_context(org.id):
            from tests.factories import TEST_ACTOR
            from webhooks.services import subscription_update

            subscription_update(
                actor=TEST_ACTOR, organization_id=org.id,
                subscription_id=subscribe_url.subscription.id, changes={"url": url},
            )  # fmt: skip
        AgentFactory(organization=org)
        relay_run(organization_id=org.id)
        deliveries_send(organization_id=org.id)
    finally:
        restore()
    assert resolver.lookups.count("rebind.test") >= 2  # checked again for the connection
    with tenant_context(org.id):
        attempts = list(WebhookAttempt.objects.filter(organization_id=org.id))
    assert attempts and {a.outcome for a in attempts} == {"refused"}
    assert receiver.received == []


LIMITS = Limits(connect_seconds=1.0, total_seconds=1.0, max_response_bytes=1024)


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.script = [
        lambda r: Response("", status=302, headers={"Location": "http://127.0.0.1/"})
    ]
    response = outbound_request("POST", receiver.url, body=b"{}", limits=LIMITS)
    assert response.status == 302 and len(receiver.received) == 1


def test_a_huge_answer_is_cut_off(receiver: Receiver) -> None:
    def huge(request: Request) -> Response:
        return Response((b"x" * 65536 for _ in range(1600)), status=200)  # 100 MiB, streamed

    receiver.script = [huge]
    response = outbound_request("POST", receiver.url, body=b"{}", limits=LIMITS)
    assert response.error == "too_large"
    assert len(response.body) <= LIMITS.max_response_bytes


def test_a_hanging_receiver_times_out(receiver: Receiver) -> None:
    import time

    def hang(request: Request) -> Response:
        time.sleep(3)
        return Response("late")

    receiver.script = [hang]
    response = outbound_request("POST", receiver.url, body=b"{}", limits=LIMITS)
    assert response.error == "timeout"
    assert response.seconds < 2.5


def test_failed_attempts_from_hostile_answers_are_retried(
    org: Organization, receiver: Receiver
) -> None:
    import time

    subscribe(org, receiver, ["agent.created"])
    restore = agentidp_override(WEBHOOK_TIMEOUT=1.0, WEBHOOK_MAX_RESPONSE_BYTES=1024)

    def hang(request: Request) -> Response:
        time.sleep(2)
        return Response("late")

    receiver.script = [
        hang,
        lambda r: Response(b"y" * 4096),
        lambda r: Response("", status=301, headers={"Location": "https://public.test/"}),
    ]
    try:
        AgentFactory(organization=org)
        relay_run(organization_id=org.id)
        for _ in range(10):
            deliveries_send(organization_id=org.id)
            time.sleep(0.02)
    finally:
        restore()
    with tenant_context(org.id):
        outcomes = list(
            WebhookAttempt.objects.filter(organization_id=org.id)
            .order_by("started_at")
            .values_list("outcome", flat=True)
        )
        (delivery,) = WebhookDelivery.objects.filter(organization_id=org.id)
    assert outcomes == ["timeout", "too_large", "redirect", "success"]
    assert delivery.status == "succeeded"
