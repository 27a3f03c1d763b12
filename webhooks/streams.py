"""Event streams: one adapter interface, two implementations (Kafka, NATS JetStream).

The relay hands each adapter a batch of envelopes and advances the stream's cursor only once
:meth:`EventStream.publish` returned, that is once the broker acknowledged every message
(Kafka: the idempotent producer's delivery reports after ``flush``; NATS: JetStream's publish
acknowledgements). A broker that is down raises :class:`StreamUnavailable`: the cursor stays
where it was, the events wait in the audit log, and the next run sends them again (at least
once; consumers deduplicate by the event id, which JetStream also does itself through
``Nats-Msg-Id``).
"""

import asyncio
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import nats
from confluent_kafka import KafkaError, Message, Producer
from django.conf import settings
from nats.errors import Error as NatsError
from nats.js.errors import BadRequestError

from webhooks.choices import StreamName

logger = logging.getLogger("agentidp.webhooks")


class StreamUnavailable(RuntimeError):
    """The broker did not acknowledge every message of the batch."""


@dataclass(frozen=True)
class StreamMessage:
    """One event as a stream carries it: the same envelope a webhook receives."""

    event_id: str
    event_type: str
    organization_id: str
    body: bytes


class EventStream(ABC):
    """A broker the relay publishes every event to."""

    name: StreamName

    @abstractmethod
    def publish(self, messages: Sequence[StreamMessage]) -> None:
        """Return once the broker has acknowledged every message; else raise
        :class:`StreamUnavailable`."""


class KafkaStream(EventStream):
    """Kafka through confluent-kafka: an idempotent producer (``acks=all``), keyed by
    organization so each organization's events stay in order in one partition."""

    name = StreamName.KAFKA

    def __init__(self, *, brokers: str, topic: str, timeout: float, extra: dict[str, str]) -> None:
        self.topic = topic
        self.timeout = timeout
        self.config: dict[str, str | int | bool] = {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # A message not acknowledged in time fails, rather than waiting in the producer:
            # the outbox (the audit log) is where undelivered events wait.
            "message.timeout.ms": int(timeout * 1000),
            **extra,
        }
        self._producer: Producer | None = None
        self._pid = 0

    def _client(self) -> Producer:
        if self._producer is None or self._pid != os.getpid():
            # librdkafka's own log lines go to Python logging, not straight to stderr
            self._producer = Producer(self.config, logger=logging.getLogger("agentidp.kafka"))
            self._pid = os.getpid()
        return self._producer

    def publish(self, messages: Sequence[StreamMessage]) -> None:
        producer = self._client()
        failures: list[str] = []

        def report(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(str(error.name()))

        for message in messages:
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=message.organization_id.encode(),
                        value=message.body,
                        headers={"id": message.event_id, "type": message.event_type},
                        on_delivery=report,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)  # the local queue is full: let deliveries drain
        left = producer.flush(self.timeout)
        if left or failures:
            reason = failures[0] if failures else f"{left} messages unacknowledged"
            raise StreamUnavailable(f"Kafka did not acknowledge the batch: {reason}")


class NatsStream(EventStream):
    """NATS JetStream through nats-py: subject ``agentidp.<organization>.<type>``, each publish
    acknowledged by the stream, ``Nats-Msg-Id`` the event id so JetStream drops a repeat."""

    name = StreamName.NATS

    def __init__(self, *, url: str, stream: str, timeout: float) -> None:
        self.url, self.stream, self.timeout = url, stream, timeout

    def publish(self, messages: Sequence[StreamMessage]) -> None:
        bound = self.timeout * (2 + len(messages) // 100)  # connect, then each chunk's acks
        try:
            asyncio.run(asyncio.wait_for(self._publish(messages), timeout=bound))
        except (NatsError, OSError, TimeoutError) as exc:
            raise StreamUnavailable(f"NATS did not acknowledge the batch: {exc!r}") from exc

    async def _publish(self, messages: Sequence[StreamMessage]) -> None:
        client = await nats.connect(
            self.url,
            connect_timeout=self.timeout,
            allow_reconnect=False,
            # nats-py keeps retrying a first connection unless it may give up after one retry
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=_quiet,
        )
        try:
            jetstream = client.jetstream(timeout=self.timeout)
            try:
                await jetstream.add_stream(name=self.stream, subjects=["agentidp.>"])
            except BadRequestError:
                pass  # it exists with an operator's own settings: use it as it is
            for start in range(0, len(messages), 100):
                await asyncio.gather(
                    *(
                        jetstream.publish(
                            f"agentidp.{m.organization_id}.{m.event_type}",
                            m.body,
                            timeout=self.timeout,
                            stream=self.stream,
                            headers={"Nats-Msg-Id": m.event_id},
                        )
                        for m in messages[start : start + 100]
                    )
                )
        finally:
            await client.close()


async def _quiet(error: Exception) -> None:
    """nats-py's error callback: the failure reaches :meth:`NatsStream.publish` as an
    exception, so nothing is logged here (nats-py would log a traceback per retry)."""


def configured_streams() -> tuple[EventStream, ...]:
    """The streams whose address is set (``KAFKA_BROKERS``, ``NATS_URL``)."""
    raw: dict[str, object] = settings.AGENTIDP
    kafka_config = raw["KAFKA_CONFIG"]
    return _streams(
        str(raw["KAFKA_BROKERS"]),
        str(raw["KAFKA_TOPIC"]),
        float(str(raw["KAFKA_TIMEOUT_SECONDS"])),
        tuple(sorted((str(k), str(v)) for k, v in kafka_config.items()))
        if isinstance(kafka_config, dict)
        else (),
        str(raw["NATS_URL"]),
        str(raw["NATS_STREAM"]),
        float(str(raw["NATS_TIMEOUT_SECONDS"])),
    )


@cache
def _streams(
    brokers: str,
    topic: str,
    kafka_timeout: float,
    kafka_extra: tuple[tuple[str, str], ...],
    nats_url: str,
    nats_stream: str,
    nats_timeout: float,
) -> tuple[EventStream, ...]:
    streams: list[EventStream] = []
    if brokers:
        streams.append(
            KafkaStream(
                brokers=brokers, topic=topic, timeout=kafka_timeout, extra=dict(kafka_extra)
            )
        )
    if nats_url:
        streams.append(NatsStream(url=nats_url, stream=nats_stream, timeout=nats_timeout))
    return tuple(streams)
