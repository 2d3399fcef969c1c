"""Floors: what the infrastructure alone manages on this machine, to read the system's figures against.

(a) PostgreSQL single-writer commits/s: one connection, one row per transaction, committed one by one.
(b) PostgreSQL batched inserts rows/s: one connection, 500-row multi-row INSERTs of rows shaped like
    events.case_events (same columns and unique indexes, ~0.5 KiB of JSON), one transaction per batch.
(c) Kafka produce→consume msgs/s through aiokafka with the system's producer settings (acks=all, no
    idempotence, linger 2 ms), one producer and one group-less consumer reading a fresh topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from uuid import uuid4

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from civicflow.db import libpq_url


@dataclass(frozen=True)
class PostgresFloor:
    commits: int
    seconds: float
    commits_per_s: float
    synchronous_commit: str
    fsync: str


@dataclass(frozen=True)
class BatchedInsertFloor:
    rows: int
    rows_per_batch: int
    row_bytes: int
    seconds: float
    rows_per_s: float


@dataclass(frozen=True)
class KafkaFloor:
    messages: int
    message_bytes: int
    partitions: int
    produce_seconds: float
    produce_msgs_per_s: float
    end_to_end_seconds: float
    end_to_end_msgs_per_s: float


async def postgres_commits(database_url: str, max_commits: int = 2000, max_seconds: float = 3.0) -> PostgresFloor:
    """Single-row INSERT + COMMIT in a loop on one connection, for max_seconds or max_commits."""
    table = f"bench_floor_{uuid4().hex[:8]}"
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        await conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL)")
        synchronous_commit = str(await conn.fetchval("SHOW synchronous_commit"))
        fsync = str(await conn.fetchval("SHOW fsync"))
        insert = f"INSERT INTO {table} (payload) VALUES ($1)"
        commits = 0
        start = time.perf_counter()
        while commits < max_commits and time.perf_counter() - start < max_seconds:
            async with conn.transaction():
                await conn.execute(insert, f"row {commits}")
            commits += 1
        seconds = time.perf_counter() - start
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    return PostgresFloor(commits, seconds, commits / seconds, synchronous_commit, fsync)


async def postgres_batched_inserts(
    database_url: str, rows_per_batch: int = 500, max_batches: int = 200, max_seconds: float = 3.0
) -> BatchedInsertFloor:
    """Multi-row INSERT (one statement of rows_per_batch rows, unnest of arrays) + COMMIT in a loop."""
    table = f"bench_floor_batch_{uuid4().hex[:8]}"
    data = json.dumps({"service_code": "POTHOLE", "description": "x" * 300, "location": {"lat": 41.9, "long": -87.6}})
    metadata = json.dumps(
        {"correlation_id": str(uuid4()), "causation_id": str(uuid4()), "actor": "bench", "channel": "web"}
    )
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        await conn.execute(
            f"CREATE TABLE {table} (position bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,"
            " case_id uuid NOT NULL, version integer NOT NULL, type text NOT NULL, schema_version integer NOT NULL,"
            " data jsonb NOT NULL, metadata jsonb NOT NULL, occurred_at timestamptz NOT NULL DEFAULT now(),"
            " recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(), UNIQUE (case_id, version))"
        )
        insert = (
            f"INSERT INTO {table} (event_id, case_id, version, type, schema_version, data, metadata)"
            " SELECT e, c, 1, 'CaseSubmitted', 1, $3::jsonb, $4::jsonb FROM unnest($1::uuid[], $2::uuid[]) AS t(e, c)"
        )
        batches = 0
        start = time.perf_counter()
        while batches < max_batches and time.perf_counter() - start < max_seconds:
            ids = [uuid.uuid4() for _ in range(rows_per_batch)]
            cases = [uuid.uuid4() for _ in range(rows_per_batch)]
            async with conn.transaction():
                await conn.execute(insert, ids, cases, data, metadata)
            batches += 1
        seconds = time.perf_counter() - start
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    rows = batches * rows_per_batch
    return BatchedInsertFloor(rows, rows_per_batch, len(data) + len(metadata), seconds, rows / seconds)


async def kafka_produce_consume(
    bootstrap_servers: str, messages: int = 20_000, message_bytes: int = 100, partitions: int = 6
) -> KafkaFloor:
    """Send `messages` to a fresh topic while one consumer reads them all; time both ends."""
    topic = f"civicflow.bench.floor.{uuid4().hex[:10]}"
    await _create_topic(bootstrap_servers, topic, partitions)
    try:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            await consumer.seek_to_beginning()
            start = time.perf_counter()
            receiving = asyncio.create_task(_receive(consumer, messages))
            produce_seconds = await _produce(bootstrap_servers, topic, messages, message_bytes)
            received_at = await asyncio.wait_for(receiving, timeout=120)
        finally:
            await consumer.stop()
    finally:
        await _delete_topic(bootstrap_servers, topic)
    end_to_end = received_at - start
    return KafkaFloor(
        messages,
        message_bytes,
        partitions,
        produce_seconds,
        messages / produce_seconds,
        end_to_end,
        messages / end_to_end,
    )


async def _produce(bootstrap_servers: str, topic: str, messages: int, message_bytes: int) -> float:
    """Seconds from the first send until every send is acknowledged (acks=all)."""
    producer = AIOKafkaProducer(  # the settings of civicflow.kafka.make_producer
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=False, linger_ms=2, client_id="bench"
    )
    await producer.start()
    try:
        payload = b"x" * message_bytes
        start = time.perf_counter()
        pending = [await producer.send(topic, payload, key=str(n % 997).encode()) for n in range(messages)]
        await asyncio.gather(*pending)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def _receive(consumer: AIOKafkaConsumer, messages: int) -> float:
    """perf_counter() when the last of `messages` arrived."""
    received = 0
    while received < messages:
        batches = await consumer.getmany(timeout_ms=500, max_records=5000)
        received += sum(len(records) for records in batches.values())
    return time.perf_counter()


async def _create_topic(bootstrap_servers: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _delete_topic(bootstrap_servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        with contextlib.suppress(Exception):  # best effort: the embedded broker forgets it on exit anyway
            await admin.delete_topics([topic])
    finally:
        await admin.close()
