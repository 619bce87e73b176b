"""The inference worker: a consumer group on `clips`; CoT per clip; one DB transaction; then the offset commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from schemas.messages import ClipMessage, InferenceResult
from schemas.prompts import PROMPT_VERSION, InvalidAnswer, parse_turn1
from streams.app import CLIPS_TOPIC, dead_letter, dlq_name
from streams.blobs import BlobNotFound, LocalBlobStore
from streams.clip import load_npz
from streams.engine import CotOutput, Engine
from streams.settings import Settings
from streams.sink import write_result

log = logging.getLogger(__name__)


def to_result(clip: ClipMessage, cot: CotOutput, model_version: str) -> InferenceResult:
    """Validate turn 1 against the taxonomy; an invalid answer is still stored, with its raw text and reason."""
    try:
        answer = parse_turn1(cot.turn1)
        events, description, valid, error = answer.events, answer.description, True, None
    except InvalidAnswer as err:
        events, description, valid, error = [], "", False, str(err)
    return InferenceResult(
        clip_id=clip.clip_id, model_version=model_version, prompt_version=PROMPT_VERSION, events=list(events),
        description=description, instruction=cot.turn2.strip(), raw_turn1=cot.turn1, raw_turn2=cot.turn2,
        valid=valid, error=error, latency_ms=cot.latency_ms, prompt_tokens=cot.prompt_tokens,
        generated_tokens=cot.generated_tokens,
    )


class InferenceWorker:
    def __init__(
        self, settings: Settings, bootstrap: str, engine: Engine, session_factory: Callable[[], Session],
            ) -> None:
        self.settings = settings
        group_id = inference_group(settings)
        self.engine = engine
        self.session_factory = session_factory
        self.blobs = LocalBlobStore(settings.blobs)
        self.stopping = threading.Event()
        self.processed = 0
        # kafka-python groups on the embedded broker need api_version pinned (KNOWLEDGE.md: error 79 otherwise).
        self.consumer = KafkaConsumer(
            settings.topic(CLIPS_TOPIC), bootstrap_servers=bootstrap, group_id=group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", api_version=(2, 0, 0),
            max_poll_records=1, max_poll_interval_ms=600_000, fetch_max_bytes=8_000_000,
            max_partition_fetch_bytes=8_000_000,
        )
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)

    def handle(self, record: ConsumerRecord) -> None:
        try:
            clip = ClipMessage.model_validate_json(record.value)
        except ValidationError as err:
            self._dead_letter(record, "invalid_clip", str(err.errors()[0]["msg"]))
            return
        try:
            frames = load_npz(self.blobs.path(clip.frames_uri)).frames
        except (BlobNotFound, OSError, ValueError) as err:
            self._dead_letter(record, "unreadable_frames", str(err))
            return
        cot = self.engine.run_cot(frames)
        result = to_result(clip, cot, self.engine.model_version)
        self._write_until_durable(clip, result)
        log.info("clip %s: %d events, valid=%s, %.0f ms", clip.clip_id[:12], len(result.events), result.valid,
                 result.latency_ms)

    def _write_until_durable(self, clip: ClipMessage, result: InferenceResult) -> None:
        """Postgres down: keep retrying with backoff and commit no offset meanwhile, so nothing is lost."""
        delay = 0.5
        while True:
            try:
                write_result(self.session_factory, clip=clip, result=result)
                return
            except OperationalError as err:
                if self.stopping.is_set():
                    raise
                log.warning("Postgres unavailable (%s); retrying in %.1f s", type(err).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        value = dead_letter(record.topic, reason, detail, record.key, record.value)
        self.producer.send(dlq_name(record.topic), key=record.key, value=value).get(timeout=30)

    def run(self, max_idle_s: float | None = None) -> int:
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                batches = self.consumer.poll(timeout_ms=500)
                if not batches:
                    if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                    continue
                for tp, records in batches.items():
                    for record in records:
                        self.handle(record)
                        # Only after the database commit: at-least-once, made exactly-once by the upsert.
                        self.consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                        self.processed += 1
                idle_since = time.monotonic()
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close()
        return self.processed

    def stop(self) -> None:
        self.stopping.set()


def inference_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}drivecoach-inference"


def committed_offsets(bootstrap: str, settings: Settings) -> dict[int, int]:
    """The group's committed offset per partition of `clips` (used by tests and the demo's final check)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=inference_group(settings), enable_auto_commit=False,
                             api_version=(2, 0, 0))
    try:
        parts = consumer.partitions_for_topic(settings.topic(CLIPS_TOPIC)) or set()
        out = {}
        for p in sorted(parts):
            off = consumer.committed(TopicPartition(settings.topic(CLIPS_TOPIC), p))
            out[p] = off or 0
        return out
    finally:
        consumer.close(autocommit=False)


__all__ = ["InferenceWorker", "committed_offsets", "to_result"]
