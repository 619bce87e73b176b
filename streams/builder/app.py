"""The clip builder process: a kafka-python consumer group on `clip-plans` feeding a process pool.

Faust agents are not used here: agent concurrency above 1 commits offsets past messages still in flight
(faust-streaming #606). This loop keeps up to two builds per pool process in flight, publishes each clip as soon as
it is built and waits for the broker's ack, and commits a partition's offset only up to the first plan whose clip
is not yet acknowledged. A builder killed mid-build therefore replays from its last commit; a replayed plan gives
the same frames blob key and the same clip message, which the sink upserts, so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.producer.future import FutureRecordMetadata
from pydantic import ValidationError

from schemas.messages import ClipMessage, ClipPlanMessage
from schemas.taxonomy import View
from streams.builder.build import Built, build_and_store
from streams.builder.clip import single_threaded
from streams.infra import metrics
from streams.infra.blobs import BlobUnavailable, blob_spec
from streams.infra.topics import (
    CLIP_PLANS_TOPIC,
    CLIPS_TOPIC,
    DRIVER_TOPIC,
    ROAD_TOPIC,
    builder_group,
    dead_letter,
    dlq_name,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

IN_FLIGHT_PER_PROCESS = 2  # one building, one queued: a process never waits for the loop to hand it work


@dataclass
class Job:
    """A plan in flight; `acked` once its clip (or its dead letter) is acknowledged by the broker. A plan that did
    not parse has no build: it holds its offset until the plans before it are done."""

    record: ConsumerRecord
    plan: ClipPlanMessage | None
    future: Future[Built] | None
    acked: bool = False


def pop_acked_prefix(queue: deque[Job]) -> int | None:
    """Drop the partition's jobs acknowledged in a row from the oldest, and return the offset to commit (one past
    the last of them); None when the oldest is still in flight. A job acked behind one in flight waits for it."""
    end = None
    while queue and queue[0].acked:
        end = queue.popleft().record.offset + 1
    return end


POOL_NICENESS = 10


def _pool_process() -> None:
    """A pool process decodes on one thread, at a lower CPU priority: where stages share cores (one machine, the
    demo, compose), the joiner's and this builder's own loops and heartbeats are served before bulk decoding."""
    single_threaded()
    os.nice(POOL_NICENESS)


class ClipBuilder:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.built = 0
        self.capacity = settings.clip_workers * IN_FLIGHT_PER_PROCESS
        self.store_backoff_s = 0.0
        self.jobs: dict[TopicPartition, deque[Job]] = {}
        self.pool = self._new_pool()
        # kafka-python groups on the embedded broker need api_version pinned (docs/knowledge.md: error 79 otherwise).
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=builder_group(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            api_version=(2, 0, 0),
            max_poll_interval_ms=600_000,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
        )
        self.consumer.subscribe([settings.topic(CLIP_PLANS_TOPIC)], listener=_Revoked(self))
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_request_size=8_000_000
        )

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.settings.clip_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pool_process,
        )

    # --- the loop ---------------------------------------------------------------------------------------------

    def run(self, max_idle_s: float | None = None) -> int:
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                if self._take(self.capacity - self._in_flight()):
                    idle_since = time.monotonic()
                self._finish(self._wait_for_builds(timeout_s=0.2))
                self._commit()
                if self._in_flight():
                    idle_since = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
            self.drain()
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close()
            self.pool.shutdown(cancel_futures=True)
        return self.built

    def stop(self) -> None:
        self.stopping.set()

    def drain(self, partitions: set[TopicPartition] | None = None) -> None:
        """Finish every build in flight (of `partitions`), publish, commit: on SIGTERM and before a rebalance."""
        while any(j for tp, q in self.jobs.items() if partitions is None or tp in partitions for j in q):
            self._finish(self._wait_for_builds(timeout_s=1.0))
            self._commit(partitions)
        for tp in list(self.jobs) if partitions is None else partitions:
            self.jobs.pop(tp, None)

    def _in_flight(self) -> int:
        return sum(len(q) for q in self.jobs.values())

    def _take(self, free: int) -> bool:
        """Poll up to `free` plans and submit each to the pool; a plan that does not parse is dead-lettered."""
        if free <= 0:
            return False
        got = self.consumer.poll(timeout_ms=0 if self._in_flight() else 500, max_records=free)
        for records in got.values():
            for record in records:
                self._submit(record)
        return bool(got)

    def _submit(self, record: ConsumerRecord) -> None:
        metrics.INPUT_RECORDS.labels(stage="builder").inc()
        tp = TopicPartition(record.topic, record.partition)
        queue = self.jobs.setdefault(tp, deque())
        try:
            plan = ClipPlanMessage.model_validate_json(record.value)
        except ValidationError as err:
            reason = str(err.errors()[0]["msg"])
            self._send_dead_letter(record.topic, "invalid_plan", reason, record).get(timeout=60)
            queue.append(Job(record, None, None, acked=True))
            return
        queue.append(Job(record, plan, self._start(plan)))

    def _start(self, plan: ClipPlanMessage) -> Future[Built]:
        s = self.settings
        return self.pool.submit(
            build_and_store, plan, blob_spec(s), s.sample_fps, s.max_frames, s.max_pixels, s.s3_endpoint_url
        )

    def _wait_for_builds(self, timeout_s: float) -> list[Job]:
        pending = {j.future: j for q in self.jobs.values() for j in q if j.future is not None and not j.acked}
        if not pending:
            return []
        done, _ = wait(pending, timeout=timeout_s, return_when=FIRST_COMPLETED)
        return [pending[f] for f in done]

    def _finish(self, jobs: list[Job]) -> None:
        """Publish each built clip (or dead-letter its plan) and wait for the acks before anything is committed."""
        sends, handled, broken, unavailable = [], [], False, []
        for job in jobs:
            assert job.future is not None and job.plan is not None
            try:
                built = job.future.result()
            except BrokenProcessPool:
                broken = True
                continue
            except BlobUnavailable as err:  # the store is down, not the input wrong: build it again later
                unavailable.append((job, err))
                continue
            except Exception as err:  # noqa: BLE001 - a plan that cannot be built goes to the DLQ with the reason
                detail = f"{job.plan.clip_id}: {type(err).__name__}: {err}"
                sends.append(
                    self._send_dead_letter(job.record.topic, "clip_build_failed", detail, job.record)
                )
            else:
                sends += self._publish(job.plan, built)
            handled.append(job)
        for send in sends:
            send.get(timeout=60)
        for job in handled:
            job.acked = True
        if handled:
            metrics.LAST_RECORD.set_to_current_time()
        if broken:
            self._restart_pool()
        if unavailable:
            self._retry_later(unavailable)
        elif handled:
            self.store_backoff_s = 0.0

    def _publish(self, plan: ClipPlanMessage, built: Built) -> list[FutureRecordMetadata]:
        s = self.settings
        key = plan.vehicle_id.encode()
        sends = []
        for (
            ref,
            reason,
            detail,
        ) in built.faults:  # the clip stands without them; the segments are dead-lettered
            camera_topic = s.topic(ROAD_TOPIC if ref.camera is View.ROAD else DRIVER_TOPIC)
            value = dead_letter(
                camera_topic,
                reason,
                f"{detail} (clip {plan.clip_id} built without it)",
                key,
                ref.model_dump_json().encode(),
            )
            sends.append(self.producer.send(dlq_name(camera_topic), key=key, value=value))
            metrics.DEAD_LETTERS.labels(topic=dlq_name(camera_topic), reason=reason).inc()
        message = ClipMessage(
            **plan.model_dump(exclude={"schema_version", "views"}),
            telemetry=built.telemetry,  # on the clip's time base; its segments name only where theirs is stored
            views=[v for v in plan.views if v in built.views],
            sample_fps=s.sample_fps,
            frames_uri=built.frames_uri,
            num_frames=built.num_frames,
            frame_width=built.frame_width,
            frame_height=built.frame_height,
        )
        sends.append(
            self.producer.send(s.topic(CLIPS_TOPIC), key=key, value=message.model_dump_json().encode())
        )
        metrics.CLIPS.labels(views="+".join(message.views)).inc()
        metrics.CLIP_BUILD_SECONDS.observe(built.seconds)
        if plan.revision > 1:
            metrics.CLIP_REVISIONS.inc()
        self.built += 1
        log.info(
            "clip %s %s %.1f-%.1f s revision %d, %d frames in %.2f s",
            plan.clip_id[:12],
            plan.vehicle_id,
            plan.start_ts,
            plan.end_ts,
            plan.revision,
            built.num_frames,
            built.seconds,
        )
        return sends

    def _retry_later(self, jobs: list[tuple[Job, BlobUnavailable]]) -> None:
        """Wait (doubling up to 30 s while the store stays down) and submit the builds again; nothing is committed
        past them meanwhile, and nothing is dead-lettered for an outage."""
        self.store_backoff_s = min(30.0, max(0.5, self.store_backoff_s * 2))
        log.warning(
            "blob store unavailable (%s); retrying %d build(s) in %.1f s",
            jobs[0][1],
            len(jobs),
            self.store_backoff_s,
        )
        time.sleep(self.store_backoff_s)
        for job, _ in jobs:
            assert job.plan is not None
            job.future = self._start(job.plan)

    def _restart_pool(self) -> None:
        """A pool process died (killed, out of memory): a new pool, and every unfinished build submitted again."""
        log.warning("a clip-building process died; restarting the pool and resubmitting the builds in flight")
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        for queue in self.jobs.values():
            for job in queue:
                if not job.acked and job.plan is not None:
                    job.future = self._start(job.plan)

    def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Per partition, commit past the acknowledged prefix: never past a plan whose clip is still in flight."""
        offsets = {}
        for tp, queue in self.jobs.items():
            if partitions is not None and tp not in partitions:
                continue
            end = pop_acked_prefix(queue)
            if end is not None:
                offsets[tp] = OffsetAndMetadata(end, "", -1)
        if offsets:
            self.consumer.commit(offsets)

    # --- dead letters -----------------------------------------------------------------------------------------

    def _send_dead_letter(
        self, source: str, reason: str, detail: str, record: ConsumerRecord
    ) -> FutureRecordMetadata:
        log.warning("dead letter from %s: %s: %s", source, reason, detail)
        metrics.DEAD_LETTERS.labels(topic=dlq_name(source), reason=reason).inc()
        value = dead_letter(source, reason, detail, record.key, record.value)
        return self.producer.send(dlq_name(source), key=record.key, value=value)


class _Revoked(ConsumerRebalanceListener):
    """Before partitions move to another builder, finish and commit their builds here (else they are rebuilt)."""

    def __init__(self, builder: ClipBuilder) -> None:
        self.builder = builder

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.builder.drain(set(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        metrics.REBALANCES.inc()


def run_builder(settings: Settings, bootstrap: str) -> int:
    """Blocks until SIGTERM/SIGINT (which finish the builds in flight and commit them)."""
    import signal

    builder = ClipBuilder(settings, bootstrap)
    metrics.serve(settings.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: builder.stop())
    signal.signal(signal.SIGINT, lambda *_: builder.stop())
    return builder.run()
