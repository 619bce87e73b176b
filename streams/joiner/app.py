"""The joiner process: a Faust app whose agent joins the camera topics into clip plans and publishes them to
`clip-plans` for the builders; its timer ticks vehicles that wait on time."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import faust

from schemas.messages import ClipPlanMessage
from schemas.taxonomy import View
from streams.errors import BadSegment
from streams.infra import metrics
from streams.infra.blobs import LocalBlobStore
from streams.infra.topics import (
    CLIP_PLANS_TOPIC,
    DRIVER_TOPIC,
    ROAD_TOPIC,
    TICK_HEADER,
    dead_letter,
    dlq_name,
    is_tick,
)
from streams.joiner.faust_seek import install as install_seek_fix
from streams.joiner.join import (
    Admission,
    ClipPlan,
    JoinRules,
    Step,
    VehicleJoinState,
    is_expired,
    needs_tick,
    observe_tick,
    receive,
    windows_to_load,
)
from streams.joiner.offsets import OffsetWatch
from streams.joiner.segments import TimeLimits, claim_check, parse_segment, probe_video
from streams.joiner.windows import WindowStore
from streams.settings import Settings

log = logging.getLogger(__name__)
install_seek_fix()  # faust-streaming 0.15.3 skips input records after a table recovery otherwise (faust_seek.py)

LOOP_PROBE_S = 0.25


def probe_blob(blob_root: str, uri: str) -> None:
    """Runs in the process pool: raises BadSegment for a video that cannot be opened or decoded."""
    probe_video(LocalBlobStore(Path(blob_root)).path(uri))


RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


class Joiner:
    """What the join agent and the tick timer share: the rules, the join table, the clip-building pool and the
    topics they write to. Each record goes through `handle`; the Faust agent is a thin loop around it."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.rules = JoinRules.from_settings(settings)
        self.limits = TimeLimits.from_settings(settings)
        self.blobs = LocalBlobStore(settings.blobs)
        self.windows = WindowStore(self.blobs)
        self.offsets = OffsetWatch()
        self.inputs = app.topic(settings.topic(ROAD_TOPIC), settings.topic(DRIVER_TOPIC), **RAW)
        self.camera_topics = [
            app.topic(settings.topic(name), partitions=settings.partitions, **RAW)
            for name in (ROAD_TOPIC, DRIVER_TOPIC)
        ]
        self.plans = app.topic(settings.topic(CLIP_PLANS_TOPIC), partitions=settings.partitions, **RAW)
        self.dlqs = {
            name: app.topic(dlq_name(settings.topic(name)), **RAW) for name in (ROAD_TOPIC, DRIVER_TOPIC)
        }
        # Raw JSON bytes: Faust cannot rebuild a `value_type=dict` table from its changelog (docs/knowledge.md).
        self.table = app.Table(
            "join-state", default=None, partitions=settings.partitions, key_type=str, value_type=bytes
        )
        # Probing runs in worker processes so the event loop (and the consumer's heartbeat) never waits on it.
        self.pool = ProcessPoolExecutor(
            max_workers=settings.clip_workers, mp_context=multiprocessing.get_context("spawn")
        )

    async def handle(self, event: faust.EventT) -> None:
        """One record of a camera topic: a tick of this joiner's timer, or an upload."""
        self._watch_offsets(event)
        topic = event.message.topic
        base_topic = ROAD_TOPIC if topic == self.settings.topic(ROAD_TOPIC) else DRIVER_TOPIC
        camera = View.ROAD if base_topic == ROAD_TOPIC else View.DRIVER
        arrived = event.message.timestamp or time.time()  # the record's timestamp: when it was uploaded
        if is_tick(event.headers):
            state = _load(self.table.get(event.key.decode() if event.key else ""))
            if state is not None:
                await self.apply(observe_tick(state, camera, arrived, self.rules))
            return
        await self.admit(topic, base_topic, event.key, event.value, arrived)

    def _watch_offsets(self, event: faust.EventT) -> None:
        """Log where each partition starts and count offsets never handed to this joiner (a Faust seek bug)."""
        topic, partition, offset = event.message.topic, event.message.partition, event.message.offset
        first, gap = self.offsets.observe(
            topic, partition, offset, committed=_committed(self.app, event.message.tp)
        )
        if first:
            log.info("reading %s[%d] from offset %d", topic, partition, offset)
        if gap is not None:
            log.warning(
                "offsets %d-%d of %s[%d] were never handed to this joiner",
                gap.first_missing,
                gap.last_missing,
                topic,
                gap.partition,
            )
            metrics.INPUT_OFFSET_GAPS.labels(topic=topic).inc(gap.last_missing - gap.first_missing + 1)

    async def admit(
        self, topic: str, base_topic: str, key: bytes | None, value: bytes | None, arrived: float
    ) -> None:
        """Validate an upload and probe its video (a refusal is a dead letter), then join it."""
        try:
            segment = claim_check(
                parse_segment(
                    value or b"",
                    max_bytes=self.settings.inline_max_bytes,
                    now=time.time(),
                    arrived=arrived,
                    limits=self.limits,
                ),
                self.blobs,
            )
            assert segment.video_uri is not None
            await asyncio.get_running_loop().run_in_executor(
                self.pool, probe_blob, str(self.blobs.root), segment.video_uri
            )
        except BadSegment as err:
            await self.dead_letter(topic, base_topic, err.reason, err.detail, key, value)
            return
        state = _load(self.table.get(segment.vehicle_id)) or VehicleJoinState(
            fleet_id=segment.fleet_id, vehicle_id=segment.vehicle_id
        )
        manifests = {
            w: self.windows.load(segment.vehicle_id, w) for w in windows_to_load(state, segment, self.rules)
        }
        await self.apply(receive(state, segment, arrived=arrived, rules=self.rules, manifests=manifests))

    async def apply(self, step: Step) -> None:
        """Emit the clips that became final, then store their windows' manifests, then keep (or drop) the state: in
        this order, a crash anywhere re-emits the same revisions and loses nothing."""
        for message, admission in step.outcomes:
            metrics.SEGMENTS.labels(outcome=admission.value).inc()
            if admission is Admission.REVISES:
                log.info(
                    "segment %s of %s lands in a window already emitted: its clip is revised",
                    message.segment_id,
                    message.vehicle_id,
                )
        for plan in step.plans:
            await self.emit(plan)
        for manifest in step.manifests:
            self.windows.save(manifest)
        if is_expired(step.state, self.rules):
            self.table.pop(
                step.state.vehicle_id, None
            )  # a tombstone in the changelog: an idle vehicle holds no state
        else:
            self.table[step.state.vehicle_id] = _dump(step.state)

    async def emit(self, plan: ClipPlan) -> None:
        """Publish the plan for the clip builders and wait for the broker's ack, so the input offset is never
        committed ahead of it. Building happens elsewhere: a slow decode never holds up the join."""
        message = ClipPlanMessage(
            clip_id=plan.clip_id,
            fleet_id=plan.fleet_id,
            vehicle_id=plan.vehicle_id,
            driver_id=plan.driver_id,
            window_start=plan.window_start,
            start_ts=plan.start_ts,
            end_ts=plan.end_ts,
            views=list(plan.views),
            segments=list(plan.segments),
            revision=plan.revision,
        )
        await (await self.plans.send(key=plan.vehicle_id.encode(), value=message.model_dump_json().encode()))
        metrics.CLIP_PLANS.inc()
        log.info(
            "clip plan %s %s %.1f-%.1f s revision %d",
            plan.clip_id[:12],
            plan.vehicle_id,
            plan.start_ts,
            plan.end_ts,
            plan.revision,
        )

    async def dead_letter(
        self, topic: str, dlq: str, reason: str, detail: str, key: bytes | None, value: bytes | None
    ) -> None:
        log.warning("dead letter from %s: %s: %s", topic, reason, detail)
        await (await self.dlqs[dlq].send(key=key, value=dead_letter(topic, reason, detail, key, value)))
        metrics.DEAD_LETTERS.labels(topic=dlq_name(self.settings.topic(dlq)), reason=reason).inc()

    async def tick_waiting_vehicles(self) -> None:
        """Tick each camera topic of a vehicle that waits on time while some camera's topic is quiet. The tick lands
        behind any backlog on that topic, so when the agent reads it, every upload sent before it has been read: a
        silence it then sees is the fleet's, not this joiner's (docs/join.md, arrival order and idleness)."""
        now = time.time()
        for vehicle, stored in list(self.table.items()):
            state = _load(stored)
            if state is not None and needs_tick(state, self.rules, now=now, quiet_s=self.settings.tick_s):
                for camera_topic in self.camera_topics:
                    await camera_topic.send(key=vehicle.encode(), value=b"", headers={TICK_HEADER: b"1"})


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """The Faust app: the join agent and the tick timer are thin loops around a `Joiner`."""
    app = _faust_app(settings, bootstrap)
    joiner = Joiner(app, settings)

    @app.agent(joiner.inputs)
    async def join(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await joiner.handle(event)

    @app.timer(interval=settings.tick_s)
    async def grace_timer() -> None:
        await joiner.tick_waiting_vehicles()

    @app.on_partitions_assigned.connect
    async def count_assignment(*_: Any, **__: Any) -> None:
        metrics.REBALANCES.inc()
        joiner.offsets.reset()

    _add_loop_lag_probe(app)
    return app


def _faust_app(settings: Settings, bootstrap: str) -> faust.App:
    extra: dict[str, Any] = {"producer_max_batch_size": 1} if settings.one_record_per_batch else {}
    app = faust.App(
        f"{settings.topic_prefix}drivecoach-joiner",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        web_enabled=False,
        broker_session_timeout=settings.session_timeout_s,
        producer_max_request_size=8_000_000,
        consumer_max_fetch_size=8_000_000,
        **extra,
    )
    app.conf.producer_acks = -1
    return app


def _add_loop_lag_probe(app: faust.App) -> None:
    """How late this timer fires is how long the event loop was blocked: heartbeats share the loop."""
    last_probe: float | None = None
    lag_max = 0.0

    @app.timer(interval=LOOP_PROBE_S)
    async def loop_lag_probe() -> None:
        nonlocal last_probe, lag_max
        now = time.monotonic()
        if last_probe is not None:
            lag_max = max(lag_max, now - last_probe - LOOP_PROBE_S)
            metrics.LOOP_LAG_MAX.set(lag_max)
        last_probe = now


def _committed(app: faust.App, tp: Any) -> int | None:
    """The group's committed offset for `tp` as Faust read it when it seeked after the assignment. Faust keeps it in
    a private field (no public accessor in 0.15.3); None where there is none, or the field is gone."""
    offsets = getattr(app.consumer, "_committed_offset", None)
    value = offsets.get(tp) if isinstance(offsets, dict) else None
    return value if isinstance(value, int) else None


def _load(stored: bytes | None) -> VehicleJoinState | None:
    return VehicleJoinState.model_validate_json(stored) if stored else None


def _dump(state: VehicleJoinState) -> bytes:
    return state.model_dump_json().encode()


def run_joiner(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Blocks until SIGTERM/SIGINT; Faust commits input offsets only after the agent has handled them."""
    app = create_app(settings, bootstrap)
    metrics.serve(settings.metrics_port)
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
