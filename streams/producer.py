"""The reference telematics producer: creates the topics and uploads camera segments, keyed by vehicle."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.messages import SegmentMessage
from schemas.taxonomy import View
from streams.app import CLIPS_TOPIC, DRIVER_TOPIC, ROAD_TOPIC, dlq_name
from streams.settings import Settings

log = logging.getLogger(__name__)


def all_topics(settings: Settings) -> list[str]:
    base = [ROAD_TOPIC, DRIVER_TOPIC, CLIPS_TOPIC]
    return [settings.topic(t) for t in base] + [dlq_name(settings.topic(t)) for t in base]


def ensure_topics(bootstrap: str, settings: Settings) -> None:
    """Same partition count for every keyed topic, so road, driver and ticks are co-partitioned by vehicle."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="drivecoach-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in all_topics(settings) if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, settings.partitions, 1) for t in missing])
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(missing))
    finally:
        admin.close()


def make_producer(bootstrap: str, settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=0,
        # Tansu 0.6 reports a wrong end offset for multi-record batches (KNOWLEDGE.md); real Kafka needs no such cap.
        batch_size=0 if settings.one_record_per_batch else 16384,
        max_request_size=8_000_000,
    )


def topic_for(camera: View, settings: Settings) -> str:
    return settings.topic(ROAD_TOPIC if camera is View.ROAD else DRIVER_TOPIC)


def publish(producer: KafkaProducer, segments: Iterable[SegmentMessage], settings: Settings) -> int:
    """Send and wait for every ack: an upload counts as done only when the broker has it."""
    futures = [
        producer.send(topic_for(s.camera, settings), key=s.vehicle_id.encode(), value=s.model_dump_json().encode())
        for s in segments
    ]
    for future in futures:
        future.get(timeout=30)
    return len(futures)
