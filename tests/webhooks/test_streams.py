"""Event streams against real brokers: Kafka as librdkafka's mock cluster (its own process, so
the test can freeze it and bring it back) and NATS JetStream (a nats-server started here).
Nothing is lost while a broker is down: the events wait in the audit log."""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import nats
import pytest
from confluent_kafka import Consumer

from agentidp.devenv import free_port, port_answers
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from organizations.models import Organization
from tests.factories import AgentFactory
from tests.webhooks.conftest import agentidp_override
from webhooks.choices import PUBLISHED
from webhooks.models import EventCursor
from webhooks.relay import relay_run

MOCK_CLUSTER = """
import sys, time
from confluent_kafka import Producer
holder = Producer({"test.mock.num.brokers": 1})
brokers = holder.list_topics(timeout=10).brokers.values()
print(",".join(f"{b.host}:{b.port}" for b in brokers), flush=True)
while True:
    holder.poll(0.5)
"""


@dataclass
class MockKafka:
    process: subprocess.Popen[str]
    bootstrap: str

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def kafka() -> Iterator[MockKafka]:
    process = subprocess.Popen(  # noqa: S603 - our own script, the running interpreter
        [sys.executable, "-c", MOCK_CLUSTER], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    bootstrap = process.stdout.readline().strip()
    assert bootstrap, "the mock cluster did not start"
    mock = MockKafka(process=process, bootstrap=bootstrap)
    topic = f"agentidp-test-{os.getpid()}-{time.monotonic_ns()}"
    restore = agentidp_override(
        KAFKA_BROKERS=bootstrap, KAFKA_TOPIC=topic, KAFKA_TIMEOUT_SECONDS=3.0
    )
    yield mock
    restore()
    mock.thaw()
    process.kill()
    process.wait()


def _consume_kafka(bootstrap: str, topic: str, expected: int) -> list[tuple[str, bytes, str]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tests", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: list[tuple[str, bytes, str]] = []
    deadline = time.monotonic() + 30
    while len(seen) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        pairs = cast(list[tuple[str, bytes]], message.headers() or [])
        headers = {name: value.decode() for name, value in pairs}
        key = message.key()
        seen.append((headers["id"], key if isinstance(key, bytes) else b"", headers["type"]))
    consumer.close()
    return seen


def _published_ids(organization: Organization) -> set[str]:
    with tenant_context(organization.id):
        return {
            str(i)
            for i in AuditEvent.objects.filter(
                organization_id=organization.id, action__in=PUBLISHED, outcome="success"
            ).values_list("id", flat=True)
        }


def _cursor(organization: Organization, stream: str) -> int:
    with tenant_context(organization.id):
        cursor = EventCursor.objects.filter(organization_id=organization.id, stream=stream).first()
    return cursor.sequence if cursor else 0


def test_kafka_gets_every_event_keyed_by_organization(org: Organization, kafka: MockKafka) -> None:
    from django.conf import settings

    for _ in range(3):
        AgentFactory(organization=org)
    report = relay_run(organization_id=org.id)
    assert report.streamed["kafka"] >= 6  # agent.created and did.created, three times
    seen = _consume_kafka(
        kafka.bootstrap, settings.AGENTIDP["KAFKA_TOPIC"], report.streamed["kafka"]
    )
    assert {event_id for event_id, _, _ in seen} == _published_ids(org)
    assert {key for _, key, _ in seen} == {str(org.id).encode()}
    assert "agent.created" in {event_type for _, _, event_type in seen}


def test_kafka_down_loses_nothing_and_catches_up(org: Organization, kafka: MockKafka) -> None:
    from django.conf import settings

    AgentFactory(organization=org)
    first = relay_run(organization_id=org.id)
    sent_before = first.streamed["kafka"]
    kafka.freeze()  # the broker stops answering
    AgentFactory(organization=org)
    AgentFactory(organization=org)
    cursor_before = _cursor(org, "kafka")
    report = relay_run(organization_id=org.id)
    assert report.unavailable == ["kafka"]
    assert _cursor(org, "kafka") == cursor_before  # the events wait in the audit log
    kafka.thaw()  # back
    caught_up = relay_run(organization_id=org.id)
    assert caught_up.unavailable == [] and caught_up.streamed["kafka"] >= 4
    seen = _consume_kafka(
        kafka.bootstrap, settings.AGENTIDP["KAFKA_TOPIC"], sent_before + caught_up.streamed["kafka"]
    )
    assert {event_id for event_id, _, _ in seen} == _published_ids(org)


@pytest.fixture
def nats_server() -> Iterator[str]:
    port = free_port()
    store = tempfile.mkdtemp(prefix="agentidp-nats-")
    command = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    deadline = time.monotonic() + 10
    while not port_answers("127.0.0.1", port):
        assert time.monotonic() < deadline and process.poll() is None, "nats-server did not start"
        time.sleep(0.05)
    url = f"nats://127.0.0.1:{port}"
    restore = agentidp_override(NATS_URL=url, NATS_TIMEOUT_SECONDS=2.0)
    yield url
    restore()
    process.kill()
    process.wait()


async def _nats_read(url: str, expected: int) -> list[tuple[str, str]]:
    """Every message in the stream: ``expected`` of them, then a short look for any more."""
    client = await nats.connect(url)
    jetstream = client.jetstream()
    subscription = await jetstream.pull_subscribe("agentidp.>", durable="tests", stream="AGENTIDP")
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        wanted = expected - len(seen)
        try:
            messages = await subscription.fetch(max(wanted, 1), timeout=1 if wanted > 0 else 0.5)
        except nats.errors.TimeoutError:
            if wanted <= 0:
                break  # nothing more than expected
            continue
        for message in messages:
            seen.append((message.subject, (message.headers or {}).get("Nats-Msg-Id", "")))
            await message.ack()
    await client.close()
    return seen


def test_nats_jetstream_gets_every_event_once(org: Organization, nats_server: str) -> None:
    for _ in range(2):
        AgentFactory(organization=org)
    report = relay_run(organization_id=org.id)
    assert report.streamed["nats"] >= 4
    # a second publication of the same events (at-least-once) is dropped by JetStream
    with tenant_context(org.id):
        EventCursor.objects.filter(organization_id=org.id, stream="nats").update(sequence=0)
    relay_run(organization_id=org.id)
    seen = asyncio.run(_nats_read(nats_server, report.streamed["nats"]))
    assert len(seen) == report.streamed["nats"]
    assert {message_id for _, message_id in seen} == _published_ids(org)
    assert f"agentidp.{org.id}.agent.created" in {subject for subject, _ in seen}


def test_nats_down_loses_nothing(org: Organization, nats_server: str) -> None:
    AgentFactory(organization=org)
    restore = agentidp_override(NATS_URL=f"nats://127.0.0.1:{free_port()}")  # nothing there
    try:
        report = relay_run(organization_id=org.id)
    finally:
        restore()
    assert report.unavailable == ["nats"] and _cursor(org, "nats") == 0
    report = relay_run(organization_id=org.id)
    assert report.unavailable == []
    seen = asyncio.run(_nats_read(nats_server, report.streamed["nats"]))
    assert {message_id for _, message_id in seen} == _published_ids(org)
