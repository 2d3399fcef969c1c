"""Kafka plumbing shared by the relay and the consumers: topics and producers."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from civicflow.settings import KernelSettings


async def ensure_topics(settings: KernelSettings) -> list[str]:
    """Create the case-events topic and its dead-letter topic if missing; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.case_events_topic, settings.dead_letter_topic]
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, settings.topic_partitions, settings.topic_replication) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process created it between our look and our create
        return missing
    finally:
        await admin.close()


def make_producer(settings: KernelSettings, max_message_bytes: int | None = None) -> AIOKafkaProducer:
    # acks=all for durability; idempotence is off because the embedded broker does not support it:
    # duplicates are harmless, consumers dedupe by event id.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        # The relay sends thousands of records at once: fuller batches mean fewer produce requests. Well
        # under the broker's usual message.max.bytes (1 MiB), which limits a whole batch.
        max_batch_size=256 * 1024,
        client_id="civicflow",
        max_request_size=max_message_bytes or settings.kafka_max_message_bytes,
    )
