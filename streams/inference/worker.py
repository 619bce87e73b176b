"""The inference worker: a consumer group on `clips`; batches of clips through the chain of thought; one DB
transaction per clip; then the offset commit.

Failure handling, so nothing is lost:
- an answer that fails validation is asked again once, then stored as invalid with its raw text;
- an engine that raises is restarted and the batch retried; a clip that still fails after `max_attempts` (alone,
  once its batch has been split) goes to `clips.dlq` with reason `inference_failed`;
- Postgres unreachable: the worker retries with backoff and commits no offset meanwhile;
- the production model changes (`model_versions`): the worker finishes its batch, loads the new version, and
  goes on; every row records the version that produced it.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from schemas.frames import load_frames
from schemas.messages import ClipMessage, InferenceResult
from schemas.prompts import PROMPT_VERSION, InvalidAnswer, parse_turn1
from schemas.registry import production
from streams.inference.engines.base import CotOutput, Engine
from streams.inference.sink import write_result
from streams.infra import metrics
from streams.infra.blobs import BlobNotFound, open_blob_store
from streams.infra.topics import CLIPS_TOPIC, dead_letter, dlq_name
from streams.settings import Settings

log = logging.getLogger(__name__)

EngineFactory = Callable[[str], Engine]  # model path -> a loaded engine


def to_result(clip: ClipMessage, cot: CotOutput, model_version: str) -> InferenceResult:
    """Validate turn 1 against the taxonomy; an invalid answer is still stored, with its raw text and reason."""
    try:
        answer = parse_turn1(cot.turn1)
        events, description, valid, error = answer.events, answer.description, True, None
    except InvalidAnswer as err:
        events, description, valid, error = [], "", False, str(err)
    return InferenceResult(
        clip_id=clip.clip_id,
        model_version=model_version,
        prompt_version=PROMPT_VERSION,
        events=list(events),
        description=description,
        instruction=cot.turn2.strip(),
        raw_turn1=cot.turn1,
        raw_turn2=cot.turn2,
        valid=valid,
        error=error,
        latency_ms=cot.latency_ms,
        prompt_tokens=cot.prompt_tokens,
        generated_tokens=cot.generated_tokens,
    )


@dataclass(frozen=True)
class Pending:
    record: ConsumerRecord
    clip: ClipMessage
    frames: np.ndarray


class InferenceWorker:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        engine_factory: EngineFactory,
        session_factory: Callable[[], Session],
        *,
        model_path: str,
    ) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self.session_factory = session_factory
        self.model_path = model_path
        self.engine = engine_factory(model_path)
        self.blobs = open_blob_store(settings)
        self.stopping = threading.Event()
        self.processed = 0
        self.restarts = 0
        self._next_model_check = time.monotonic() + settings.model_poll_s
        # kafka-python groups on the embedded broker need api_version pinned (KNOWLEDGE.md: error 79 otherwise).
        self.consumer = KafkaConsumer(
            settings.topic(CLIPS_TOPIC),
            bootstrap_servers=bootstrap,
            group_id=inference_group(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            api_version=(2, 0, 0),
            max_poll_records=settings.batch_size,
            max_poll_interval_ms=600_000,
            fetch_max_bytes=8_000_000,
            max_partition_fetch_bytes=8_000_000,
        )
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)

    # --- one batch -------------------------------------------------------------------------------------------

    def handle_batch(self, records: list[ConsumerRecord]) -> None:
        pending = [p for p in (self._load(r) for r in records) if p is not None]
        outputs = self._infer(pending)
        for item, cot in zip(pending, outputs, strict=True):
            if cot is None:
                continue  # dead-lettered after max_attempts
            result = to_result(item.clip, cot, self.engine.model_version)
            self._write_until_durable(item.clip, result)
            metrics.INFERENCES.labels(
                model_version=result.model_version, valid=str(result.valid).lower()
            ).inc()
            log.info(
                "clip %s: %d events, valid=%s, %.0f ms, %s",
                item.clip.clip_id[:12],
                len(result.events),
                result.valid,
                result.latency_ms,
                result.model_version,
            )

    def _load(self, record: ConsumerRecord) -> Pending | None:
        try:
            clip = ClipMessage.model_validate_json(record.value)
        except ValidationError as err:
            self._dead_letter(record, "invalid_clip", str(err.errors()[0]["msg"]))
            return None
        try:
            # The blob's bytes, from the directory or S3 (BlobUnavailable, the store's fault, is no dead letter).
            frames = load_frames(io.BytesIO(self.blobs.get_bytes(clip.frames_uri)))  # type: ignore[arg-type]
        except (BlobNotFound, OSError, ValueError) as err:
            self._dead_letter(record, "unreadable_frames", str(err))
            return None
        return Pending(record, clip, frames)

    def _infer(self, pending: list[Pending]) -> list[CotOutput | None]:
        """The batch through the engine; invalid answers asked once more; None for a clip that kept failing."""
        outputs = self._run_with_restarts(pending)
        retry = [i for i, cot in enumerate(outputs) if cot is not None and not _valid(cot)]
        if retry:
            log.info("%d answer(s) failed validation; asking once more", len(retry))
            again = self._run_with_restarts([pending[i] for i in retry])
            for i, cot in zip(retry, again, strict=True):
                if cot is not None:
                    outputs[i] = cot
        return outputs

    def _run_with_restarts(self, pending: list[Pending]) -> list[CotOutput | None]:
        if not pending:
            return []
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                with metrics.BATCH_SECONDS.time():
                    return list(self.engine.run_batch([p.frames for p in pending]))
            except Exception as err:  # noqa: BLE001 - any engine failure: restart it and retry, never drop the clip
                log.warning(
                    "engine failed on a batch of %d (attempt %d/%d): %r",
                    len(pending),
                    attempt,
                    self.settings.max_attempts,
                    err,
                )
                self._restart_engine()
        if len(pending) > 1:  # find the clip that breaks it: each alone, with its own attempts
            return [out for p in pending for out in self._run_with_restarts([p])]
        self._dead_letter(
            pending[0].record,
            "inference_failed",
            f"the engine failed {self.settings.max_attempts} times on this clip",
        )
        return [None]

    def _restart_engine(self) -> None:
        self.restarts += 1
        metrics.ENGINE_RESTARTS.inc()
        self.engine = self._swap(self.model_path)

    def _swap(self, path: str) -> Engine:
        """Drop the current engine before loading the next (a vLLM engine holds processes and its KV cache)."""
        old, self.engine = self.engine, None  # type: ignore[assignment]
        close = getattr(old, "close", None)
        if callable(close):
            try:
                close()
            except Exception as err:  # noqa: BLE001 - a crashed engine may fail to close; the new one matters
                log.warning("closing the old engine failed: %r", err)
        del old
        return self.engine_factory(path)

    # --- model versions ---------------------------------------------------------------------------------------

    def follow_production(self) -> None:
        """Between batches: load the production version when it is not the one being served."""
        if time.monotonic() < self._next_model_check:
            return
        self._next_model_check = time.monotonic() + self.settings.model_poll_s
        try:
            current = production(self.session_factory)
        except OperationalError as err:
            log.warning(
                "cannot read the model registry (%s); serving %s",
                type(err).__name__,
                self.engine.model_version,
            )
            return
        if current is None or current.version == self.engine.model_version:
            return
        log.info(
            "production model is now %s (was %s): loading %s",
            current.version,
            self.engine.model_version,
            current.path,
        )
        self.engine = self._swap(current.path)
        self.model_path = current.path
        if self.engine.model_version != current.version:
            log.warning(
                "%s loads as version %s, not %s as registered",
                current.path,
                self.engine.model_version,
                current.version,
            )

    # --- durability -------------------------------------------------------------------------------------------

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
        metrics.INFERENCE_DEAD_LETTERS.labels(reason=reason).inc()

    # --- the loop ---------------------------------------------------------------------------------------------

    def _collect(self) -> list[ConsumerRecord]:
        """Up to `batch_size` clips, waiting at most `batch_wait_ms` after the first for the batch to fill."""
        records = [r for rs in self.consumer.poll(timeout_ms=500).values() for r in rs]
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000.0
        while records and len(records) < self.settings.batch_size and time.monotonic() < deadline:
            more = self.consumer.poll(
                timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)),
                max_records=self.settings.batch_size - len(records),
            )
            records += [r for rs in more.values() for r in rs]
        return records

    def run(self, max_idle_s: float | None = None) -> int:
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                self.follow_production()
                records = self._collect()
                if not records:
                    if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                    continue
                self.handle_batch(records)
                # Only after every clip of the batch is in the database: at-least-once, exactly-once by the upsert.
                ends: dict[TopicPartition, int] = {}
                for r in records:
                    tp = TopicPartition(r.topic, r.partition)
                    ends[tp] = max(ends.get(tp, 0), r.offset + 1)
                self.consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
                self.processed += len(records)
                idle_since = time.monotonic()
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close()
        return self.processed

    def stop(self) -> None:
        self.stopping.set()


def _valid(cot: CotOutput) -> bool:
    try:
        parse_turn1(cot.turn1)
    except InvalidAnswer:
        return False
    return True


def inference_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}drivecoach-inference"


def committed_offsets(bootstrap: str, settings: Settings) -> dict[int, int]:
    """The group's committed offset per partition of `clips` (used by tests and the demo's final check)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=inference_group(settings),
        enable_auto_commit=False,
        api_version=(2, 0, 0),
    )
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
