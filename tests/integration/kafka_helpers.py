"""Reading a topic from the start without a consumer group, for assertions.

Topics hold other tests' records too (the relay publishes the session's whole store), so callers count only
their own records: `until` is a predicate over the records read so far that says when the test's own have all
arrived. Reading always goes at least to the end offsets the topic had when reading began.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_topic(
    bootstrap: str,
    topic: str,
    expect_at_least: int = 0,
    timeout: float = 30,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Every record of the topic up to its end offsets as seen after seeking to the beginning, and then on
    until at least `expect_at_least` records were read and `until` holds, or `timeout` seconds passed (the
    caller's assertions then say what is missing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assignment:
            return []
        consumer.assign(assignment)
        await consumer.seek_to_beginning(*assignment)
        ends = await consumer.end_offsets(assignment)
        records: list[Any] = []

        async def reached_the_end() -> bool:
            for tp in assignment:
                if ends[tp] > 0 and await consumer.position(tp) < ends[tp]:
                    return False
            return True

        def done() -> bool:
            return len(records) >= expect_at_least and (until is None or until(records))

        while time.monotonic() < deadline:
            if await reached_the_end() and done():
                break
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()
