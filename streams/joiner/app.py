"""The joiner process: a Faust app whose agent joins the camera topics into clip plans and publishes them to
`clip-plans` for the builders; its timer ticks vehicles that wait on time."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import faust
from faust.streams import _current_event

from schemas.messages import ClipPlanMessage, SegmentMessage
from schemas.taxonomy import View
from streams.errors import BadSegment
from streams.infra import metrics
from streams.infra.blobs import BlobNotFound, BlobUnavailable, open_blob_store, open_blob_store_at
from streams.infra.topics import (
    CLIP_PLANS_TOPIC,
    DRIVER_TOPIC,
    ROAD_TOPIC,
    TICK_HEADER,
    dead_letter,
    dlq_name,
    is_tick,
)
from streams.infra.video import probe_video
from streams.joiner.faust_seek import install as install_seek_fix
from streams.joiner.join import (
    Admission,
    ClipPlan,
    JoinRules,
    Step,
    VehicleJoinState,
    WindowManifest,
    is_expired,
    needs_tick,
    observe_tick,
    receive,
    windows_to_load,
)
from streams.joiner.offsets import OffsetWatch
from streams.joiner.segments import TimeLimits, claim_check, parse_segment
from streams.joiner.windows import WindowStore
from streams.settings import Settings

log = logging.getLogger(__name__)
install_seek_fix()  # faust-streaming 0.15.3 skips input records after a table recovery otherwise (faust_seek.py)

LOOP_PROBE_S = 0.25
READ_AHEAD = 256  # records the agent takes at once: their videos are probed together, then joined in order
READ_AHEAD_WAIT_S = 0.02  # how long it waits for more records before it handles fewer (the latency it adds)


def probe_blob(blob_spec: str, endpoint: str, uri: str) -> None:
    """Runs in the process pool: raises BadSegment for a video that cannot be opened or decoded. The video is read
    where it lies: a local file, or an S3 object through a presigned URL (OpenCV reads it with range requests)."""
    blobs = open_blob_store_at(blob_spec, endpoint)
    with blobs.video_source(uri) as video:
        try:
            probe_video(video)
        except BadSegment:
            try:  # an unreachable store (BlobUnavailable) is not a broken video: no dead letter for it
                blobs.check(uri)
            except BlobNotFound as err:
                raise BadSegment("missing_blob", str(err)) from err
            raise


def probe_blobs(blob_spec: str, endpoint: str, uris: list[str]) -> list[BadSegment | None]:
    """Runs in the process pool: each video probed in turn, and why it was refused (None: it plays)."""
    refusals: list[BadSegment | None] = []
    for uri in uris:
        try:
            probe_blob(blob_spec, endpoint, uri)
        except BadSegment as err:
            refusals.append(err)
        else:
            refusals.append(None)
    return refusals


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
        self.blobs = open_blob_store(settings)
        self.windows = WindowStore(self.blobs)
        self.offsets = OffsetWatch()
        self.states: dict[str, VehicleJoinState | None] = {}
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

    def state(self, vehicle_id: str) -> VehicleJoinState | None:
        """The vehicle's join state: parsed once from the table, then kept parsed (the table is written from here
        only, and a rebalance clears the cache)."""
        if vehicle_id not in self.states:
            self.states[vehicle_id] = _load(self.table.get(vehicle_id))
        return self.states[vehicle_id]

    async def handle_batch_until_done(self, events: list[faust.EventT]) -> None:
        """A blob store that does not answer is an outage, not bad input: the batch is handled again (after a wait
        that doubles up to 30 s) until it answers; nothing is acked meanwhile. A batch cut short and handled again
        sees its own uploads as duplicates and re-emits the same plan revisions, which downstream upserts."""
        delay = 0.5
        while True:
            try:
                await self.handle_batch(events)
                return
            except BlobUnavailable as err:
                log.warning("blob store unavailable (%s); handling the batch again in %.1f s", err, delay)
                self.states.clear()
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def handle_batch(self, events: list[faust.EventT]) -> None:
        """Records of the camera topics, in order: their videos are probed together in the pool, then each is
        joined in turn; the batch's plans, manifests and table writes are made durable at its end, before the agent
        acks any of its records (`Batch`)."""
        metrics.INPUT_RECORDS.labels(stage="joiner").inc(len(events))
        batch = Batch(self)
        parsed = [self._parse(event) for event in events]
        checked = await self._claim_checks(parsed)
        probes = await self._probe([c for c in checked if isinstance(c, SegmentMessage)])
        for event, item in zip(events, checked, strict=True):
            key, camera_topic = event.key, event.message.topic
            base_topic = ROAD_TOPIC if camera_topic == self.settings.topic(ROAD_TOPIC) else DRIVER_TOPIC
            arrived = event.message.timestamp or time.time()  # the record's timestamp: when it was uploaded
            if item is None:  # a tick of this joiner's timer
                state = batch.state(key.decode() if key else "")
                if state is not None:
                    camera = View.ROAD if base_topic == ROAD_TOPIC else View.DRIVER
                    await batch.apply(observe_tick(state, camera, arrived, self.rules), event)
            elif isinstance(item, BadSegment):
                await self.dead_letter(camera_topic, base_topic, item.reason, item.detail, key, event.value)
            elif (refusal := probes.get(item.segment_id)) is not None:
                await self.dead_letter(
                    camera_topic, base_topic, refusal.reason, refusal.detail, key, event.value
                )
            else:
                state = batch.state(item.vehicle_id) or VehicleJoinState(
                    fleet_id=item.fleet_id, vehicle_id=item.vehicle_id
                )
                manifests = {
                    w: batch.manifest(item.vehicle_id, w) for w in windows_to_load(state, item, self.rules)
                }
                await batch.apply(
                    receive(state, item, arrived=arrived, rules=self.rules, manifests=manifests), event
                )
        await batch.commit()

    def _parse(self, event: faust.EventT) -> SegmentMessage | BadSegment | None:
        """An upload validated (or why not); None for a tick."""
        self._watch_offsets(event)
        if is_tick(event.headers):
            return None
        try:
            return parse_segment(
                event.value or b"",
                max_bytes=self.settings.inline_max_bytes,
                now=time.time(),
                arrived=event.message.timestamp or time.time(),
                limits=self.limits,
            )
        except BadSegment as err:
            return err

    async def _claim_checks(
        self, parsed: list[SegmentMessage | BadSegment | None]
    ) -> list[SegmentMessage | BadSegment | None]:
        """Each upload's claim check stored or checked (or why not). On a remote store each is a round trip (a HEAD,
        or a PUT of an inline video), so a batch's run side by side in threads instead of one after another on the
        event loop; a local store's are a stat each, cheaper than a thread hop."""

        def one(item: SegmentMessage | BadSegment | None) -> SegmentMessage | BadSegment | None:
            if not isinstance(item, SegmentMessage):
                return item
            try:
                return claim_check(item, self.blobs)
            except BadSegment as err:
                return err

        if not self.blobs.remote:
            return [one(item) for item in parsed]
        return list(await asyncio.gather(*(asyncio.to_thread(one, item) for item in parsed)))

    async def _probe(self, segments: list[SegmentMessage]) -> dict[str, BadSegment]:
        """Every video of the batch probed in the pool, in as many chunks as it has processes: segment id -> why
        its video was refused. One round trip per chunk, not per upload: per-upload round trips cost more joiner
        CPU than the join itself."""
        if not segments or not self.settings.probe_on_arrival:
            return {}
        workers = self.settings.clip_workers
        chunks = [segments[k::workers] for k in range(workers) if segments[k::workers]]
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self.pool,
                    probe_blobs,
                    self.blobs.spec,
                    self.blobs.endpoint,
                    [s.video_uri or "" for s in chunk],
                )
                for chunk in chunks
            )
        )
        return {
            s.segment_id: refusal
            for chunk, refusals in zip(chunks, answers, strict=True)
            for s, refusal in zip(chunk, refusals, strict=True)
            if refusal is not None
        }

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

    async def emit(self, plan: ClipPlan) -> Any:
        """Publish the plan for the clip builders; the caller awaits the returned ack before the input is acked.
        Building happens elsewhere: a slow decode never holds up the join."""
        message = ClipPlanMessage(**vars(plan))
        sent = await self.plans.send(key=plan.vehicle_id.encode(), value=message.model_dump_json().encode())
        metrics.CLIP_PLANS.inc()
        log.info(
            "clip plan %s %s %.1f-%.1f s revision %d",
            plan.clip_id[:12],
            plan.vehicle_id,
            plan.start_ts,
            plan.end_ts,
            plan.revision,
        )
        return sent

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
        for vehicle in list(self.table.keys()):
            state = self.state(vehicle)
            if state is not None and needs_tick(state, self.rules, now=now, quiet_s=self.settings.tick_s):
                for camera_topic in self.camera_topics:
                    await camera_topic.send(key=vehicle.encode(), value=b"", headers={TICK_HEADER: b"1"})


class Batch:
    """What one batch of records changes, made durable at its end in the order that loses nothing: the clip plans
    acknowledged by the broker, then the emitted windows' manifests, then the table (once per vehicle). A crash
    anywhere before the records are acked replays the batch from the table as it was, re-emitting the same plan
    revisions (ids and revisions are deterministic; writes downstream upsert)."""

    def __init__(self, joiner: Joiner) -> None:
        self.joiner = joiner
        self.sent: list[Any] = []
        self.manifests: dict[tuple[str, float], WindowManifest] = {}
        # None: the vehicle's state expired in this batch (its next upload starts afresh, as after a table delete).
        self.states: dict[str, VehicleJoinState | None] = {}
        self.sources: dict[str, faust.EventT] = {}  # the record each vehicle's table entry is written under

    def state(self, vehicle_id: str) -> VehicleJoinState | None:
        if vehicle_id in self.states:
            return self.states[vehicle_id]
        return self.joiner.state(vehicle_id)

    def manifest(self, vehicle_id: str, start: float) -> WindowManifest | None:
        """A window emitted earlier in this batch is read from here: its manifest is not stored yet."""
        pending = self.manifests.get((vehicle_id, start))
        return pending if pending is not None else self.joiner.windows.load(vehicle_id, start)

    async def apply(self, step: Step, source: faust.EventT) -> None:
        for message, admission in step.outcomes:
            metrics.SEGMENTS.labels(outcome=admission.value).inc()
            if admission is Admission.REVISES:
                log.info(
                    "segment %s of %s lands in a window already emitted: its clip is revised",
                    message.segment_id,
                    message.vehicle_id,
                )
        for plan in step.plans:
            self.sent.append(await self.joiner.emit(plan))
        for manifest in step.manifests:
            self.manifests[(manifest.vehicle_id, manifest.start)] = manifest
        expired = is_expired(step.state, self.joiner.rules)
        self.states[step.state.vehicle_id] = None if expired else step.state
        self.sources[step.state.vehicle_id] = source

    async def commit(self) -> None:
        joiner = self.joiner
        for sent in self.sent:
            await sent  # the broker's ack of each plan
        for manifest in self.manifests.values():
            joiner.windows.save(manifest)
        for vehicle_id, state in self.states.items():
            # Faust writes a table entry to the changelog partition of "the current event", which it knows only
            # inside its own per-event iteration; a batch names the record itself (faust.streams' context variable).
            _current_event.set(weakref.ref(self.sources[vehicle_id]))
            if state is None:
                joiner.table.pop(
                    vehicle_id, None
                )  # a tombstone in the changelog: an idle vehicle holds no state
            else:
                joiner.table[vehicle_id] = _dump(state)
            joiner.states[vehicle_id] = state
        metrics.LAST_RECORD.set_to_current_time()


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """The Faust app: the join agent and the tick timer are thin loops around a `Joiner`."""
    app = faust_app(settings, bootstrap, "drivecoach-joiner")
    joiner = Joiner(app, settings)

    @app.agent(joiner.inputs)
    async def join(stream: faust.StreamT) -> None:
        # take_events acks a batch's records when the loop asks for the next batch, i.e. once this one is durable;
        # Faust commits only the acked prefix of each partition.
        async for events in stream.take_events(READ_AHEAD, within=READ_AHEAD_WAIT_S):  # type: ignore[attr-defined]
            await joiner.handle_batch_until_done(events)

    @app.timer(interval=settings.tick_s)
    async def grace_timer() -> None:
        await joiner.tick_waiting_vehicles()

    @app.on_partitions_assigned.connect
    async def count_assignment(*_: Any, **__: Any) -> None:
        metrics.REBALANCES.inc()
        joiner.offsets.reset()
        joiner.states.clear()  # another joiner may have written these vehicles' table entries meanwhile

    _add_loop_lag_probe(app)
    return app


def faust_app(settings: Settings, bootstrap: str, name: str) -> faust.App:
    """A Faust app configured as the joiner's: the bench's baseline agent is built on the same one."""
    extra: dict[str, Any] = {"producer_max_batch_size": 1} if settings.one_record_per_batch else {}
    app = faust.App(
        f"{settings.topic_prefix}{name}",
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
            lag = max(0.0, now - last_probe - LOOP_PROBE_S)
            lag_max = max(lag_max, lag)
            metrics.LOOP_LAG_MAX.set(lag_max)
            metrics.LOOP_LAG.observe(lag)
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
