"""The Faust app: topics, the join table and two thin agents (join + clip building, and the grace timer)."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import faust

from schemas.messages import ClipMessage
from streams.blobs import LocalBlobStore
from streams.clip import build_clip_frames
from streams.errors import BadSegment, VideoDecodeError
from streams.join import Admission, ClipPlan, VehicleJoinState, add_segment, has_open_stretch, ready_clips
from streams.segments import parse_segment, to_ref
from streams.settings import Settings

log = logging.getLogger(__name__)

ROAD_TOPIC, DRIVER_TOPIC, TICKS_TOPIC, CLIPS_TOPIC = "telematics.road", "telematics.driver", "drivecoach.join-ticks", "clips"


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def dead_letter(topic: str, reason: str, detail: str, key: bytes | None, value: bytes | None) -> bytes:
    return json.dumps(
        {
            "reason": reason,
            "detail": detail,
            "topic": topic,
            "key": key.decode(errors="replace") if key else None,
            "payload": value.decode(errors="replace") if value else None,
            "at": time.time(),
        }
    ).encode()


def build_and_store(plan: ClipPlan, blob_root: str, fps: float, max_frames: int, max_pixels: int) -> dict[str, Any]:
    """Runs in the process pool: decode + stack + write the frames blob; returns ClipMessage fields."""
    blobs = LocalBlobStore(__import__("pathlib").Path(blob_root))
    segments = [(ref, blobs.path(ref.video_uri)) for ref in plan.segments]
    clip = build_clip_frames(plan.start_ts, plan.end_ts, segments, fps=fps, max_frames=max_frames, max_pixels=max_pixels)
    uri = blobs.put_bytes(f"clips/{plan.vehicle_id}/{plan.clip_id}.npz", clip.to_npz())
    t, h, w, _ = clip.frames.shape
    return {"frames_uri": uri, "num_frames": t, "frame_width": w, "frame_height": h}


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    rules = settings.join_rules()
    blobs = LocalBlobStore(settings.blobs)
    extra: dict[str, Any] = {"producer_max_batch_size": 1} if settings.one_record_per_batch else {}
    app = faust.App(
        f"{settings.topic_prefix}drivecoach-joiner",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        web_enabled=False,
        producer_max_request_size=8_000_000,
        consumer_max_fetch_size=8_000_000,
        **extra,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inputs = app.topic(
        settings.topic(ROAD_TOPIC), settings.topic(DRIVER_TOPIC), settings.topic(TICKS_TOPIC), **raw
    )
    ticks = app.topic(settings.topic(TICKS_TOPIC), partitions=settings.partitions, **raw)
    clips = app.topic(settings.topic(CLIPS_TOPIC), partitions=settings.partitions, **raw)
    dlqs = {name: app.topic(dlq_name(settings.topic(name)), **raw) for name in (ROAD_TOPIC, DRIVER_TOPIC)}
    table = app.Table(
        "join-state", default=None, partitions=settings.partitions, key_type=str, value_type=dict
    )
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    async def emit(plans: list[ClipPlan]) -> None:
        loop = asyncio.get_running_loop()
        for plan in plans:
            try:
                built = await loop.run_in_executor(
                    pool, build_and_store, plan, str(blobs.root), settings.sample_fps, settings.max_frames,
                    settings.max_pixels,
                )
            except (VideoDecodeError, OSError) as err:
                log.warning("clip %s cannot be built: %s", plan.clip_id, err)
                await (await dlqs[ROAD_TOPIC].send(
                    key=plan.vehicle_id.encode(),
                    value=dead_letter("clips", "clip_build_failed", str(err), plan.vehicle_id.encode(), None),
                ))
                continue
            message = ClipMessage(
                clip_id=plan.clip_id, fleet_id=plan.fleet_id, vehicle_id=plan.vehicle_id, driver_id=plan.driver_id,
                start_ts=plan.start_ts, end_ts=plan.end_ts, views=list(plan.views),
                segments=list(plan.segments), sample_fps=settings.sample_fps, **built,
            )
            # Wait for the broker's ack so the input offset is never committed ahead of the clip.
            await (await clips.send(key=plan.vehicle_id.encode(), value=message.model_dump_json().encode()))
            log.info("clip %s %s %.1f-%.1f s", plan.clip_id[:12], plan.vehicle_id, plan.start_ts, plan.end_ts)

    @app.agent(inputs)
    async def join(stream: faust.StreamT) -> None:
        async for event in stream.events():
            topic = event.message.topic
            key, value = event.key, event.value
            vehicle = key.decode() if key else ""
            if topic == settings.topic(TICKS_TOPIC):
                state = _load(table.get(vehicle))
                if state is not None and time.time() - state.last_seen_wall >= settings.grace_s:
                    plans, state = ready_clips(state, rules, flush=True)
                    await emit(plans)
                    table[vehicle] = state.model_dump(mode="json")
                continue
            base_topic = ROAD_TOPIC if topic == settings.topic(ROAD_TOPIC) else DRIVER_TOPIC
            try:
                segment = parse_segment(value, max_bytes=settings.inline_max_bytes, now=time.time(),
                                        max_ahead_s=settings.max_clock_ahead_s)
                ref = to_ref(segment, blobs)
            except BadSegment as err:
                log.warning("dead letter from %s: %s", topic, err)
                await (await dlqs[base_topic].send(key=key, value=dead_letter(topic, err.reason, err.detail, key, value)))
                continue
            state = _load(table.get(segment.vehicle_id)) or VehicleJoinState(
                fleet_id=segment.fleet_id, vehicle_id=segment.vehicle_id
            )
            state, admission = add_segment(state, ref, driver_id=segment.driver_id, now=time.time(), rules=rules)
            if admission is Admission.LATE:
                detail = f"starts at {ref.start_ts:.3f}, clips up to {state.emitted_until:.3f} are already emitted"
                await (await dlqs[base_topic].send(key=key, value=dead_letter(topic, "late", detail, key, value)))
            plans, state = ready_clips(state, rules)
            await emit(plans)
            table[segment.vehicle_id] = state.model_dump(mode="json")

    @app.timer(interval=max(0.5, settings.grace_s / 2))
    async def grace_timer() -> None:
        now = time.time()
        for vehicle, stored in list(table.items()):
            state = _load(stored)
            if state is not None and now - state.last_seen_wall >= settings.grace_s and has_open_stretch(state, rules):
                await ticks.send(key=vehicle.encode(), value=b"{}")

    app.conf.producer_acks = -1
    return app


def _load(stored: Any) -> VehicleJoinState | None:
    return VehicleJoinState.model_validate(stored) if stored else None


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Blocks until SIGTERM/SIGINT; Faust commits input offsets only after the agent has handled them."""
    app = create_app(settings, bootstrap)
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
