"""The reference telematics producer: creates the topics and uploads camera segments, keyed by vehicle."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaProducer

from schemas.messages import SegmentMessage
from streams.infra.topics import topic_for
from streams.settings import Settings

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=0,
        # Tansu 0.6 reports a wrong end offset for multi-record batches (KNOWLEDGE.md); real Kafka needs no such cap.
        batch_size=0 if settings.one_record_per_batch else 16384,
        max_request_size=8_000_000,
    )


def publish(producer: KafkaProducer, segments: Iterable[SegmentMessage], settings: Settings) -> int:
    """Send and wait for every ack: an upload counts as done only when the broker has it."""
    futures = [
        producer.send(
            topic_for(s.camera, settings), key=s.vehicle_id.encode(), value=s.model_dump_json().encode()
        )
        for s in segments
    ]
    for future in futures:
        future.get(timeout=30)
    return len(futures)
