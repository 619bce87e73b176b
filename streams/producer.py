"""The reference telematics producer: puts camera segments into the blob store and publishes their claim checks,
keyed by vehicle. Devices that upload themselves get a presigned PUT URL instead (`drivecoach blobs presign`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from kafka import KafkaProducer

from schemas.messages import SegmentMessage
from streams.infra.blobs import BlobStore
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


def upload(store: BlobStore, vehicle_id: str, segment_id: str, source: Path) -> str:
    """Put one camera file into the blob store (a directory or S3) and return its claim check (`file://` or
    `s3://`). Uploads are immutable: the same file again is a no-op, other bytes under its key a BlobConflict."""
    return store.put_file(f"uploads/{vehicle_id}/{segment_id}{source.suffix}", source)


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
