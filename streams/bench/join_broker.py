"""`drivecoach bench join` through the broker: one Faust joiner process against the pure join (wall seconds: it
spans a broker and a joiner process)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.messages import SegmentMessage
from schemas.taxonomy import View
from streams.bench.join import synthetic_segments
from streams.demo import SIMULATED_FLEET_JOIN, expected_clip_extents
from streams.errors import BenchError
from streams.infra.blobs import LocalBlobStore
from streams.infra.topics import CLIPS_TOPIC
from streams.settings import Settings
from streams.simulate import SimSegment, make_scenarios, write_segments

if TYPE_CHECKING:
    import subprocess

    from kafka import KafkaConsumer


@dataclass(frozen=True)
class BrokerJoinBench:
    segments: int
    vehicles: int
    expected_clips: int  # the join oracle (`streams.demo.expected_clip_extents`) on the same messages
    clips: int  # expected clips that reached the `clips` topic
    unexpected_clips: int  # other clips of the measured vehicles (0 when the join agrees with its oracle)
    publish_s: float  # wall: first send -> last broker ack
    wall_s: float  # wall: first send -> last expected clip read back from `clips` (idle grace included)
    vehicle_idle_s: float  # the wall-clock idle grace each vehicle's last clip waits for (inside wall_s)
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
                stats[int(entry.name)] = raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
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


def _bench_messages(
    raw: list[tuple[str, dict[str, float | str]]],
    uris: dict[View, tuple[str, SimSegment]],
    vehicle_prefix: str = "",
) -> list[SegmentMessage]:
    """`synthetic_segments` as uploads: every segment of a camera claims the same small video blob."""
    out = []
    for vehicle, fields in raw:
        camera = View(str(fields["camera"]))
        uri, video = uris[camera]
        out.append(
            SegmentMessage(
                fleet_id="fleet-bench",
                vehicle_id=f"{vehicle_prefix}{vehicle}",
                camera=camera,
                segment_id=f"{vehicle_prefix}{fields['segment_id']}",
                start_ts=float(fields["start_ts"]),
                end_ts=float(fields["end_ts"]),
                fps=video.fps,
                width=video.width,
                height=video.height,
                codec=video.codec,
                video_uri=uri,
            )
        )
    return out


def _await_clips(
    consumer: KafkaConsumer,
    want: set[str],
    vehicles: set[str],
    joiner: subprocess.Popen[bytes],
    joiner_log: Path,
    timeout_s: float,
    progress: Callable[[str], None],
    label: str,
) -> tuple[dict[str, float], int]:
    """Read `clips` until every wanted clip id is there: (clip id -> monotonic time it was read, other clips of
    `vehicles` seen)."""

    seen: dict[str, float] = {}
    unexpected = 0
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(want):
        if joiner.poll() is not None:
            raise BenchError(f"the joiner exited with code {joiner.returncode}; see {joiner_log}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"{len(seen)}/{len(want)} clips on the clips topic after {timeout_s:.0f} s; see {joiner_log}"
            )
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
    settings: Settings,
    work_dir: Path,
    *,
    vehicles: int = 50,
    per_vehicle: int = 40,
    vehicle_idle_s: float = 1.0,
    timeout_s: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> BrokerJoinBench:
    """The same workload as `bench_join`, through a real broker and one Faust joiner process, in wall seconds.

    An embedded Tansu broker is started unless `settings.kafka_bootstrap` names one; the topics get a fresh prefix.
    Each camera's segments all claim one tiny video (64x36 road, 48x36 driver, 2 fps, 10 s), so the joiner's clip
    building (decode, stack to `max_pixels`, npz) is real but cheap. Not timed: writing that video, starting the
    joiner and joining its consumer group (~30 s on Tansu), and a warm-up vehicle whose clip proves it consumes.
    Timed: from the first send until the last expected clip is read back from `clips`. A vehicle's last clip is only
    final after `vehicle_idle_s` wall seconds without uploads from it, so that idle grace is inside the figure.
    """
    from streams.infra.broker import EmbeddedBroker
    from streams.infra.processes import settings_env, start_command, stop_process
    from streams.infra.topics import ensure_topics
    from streams.producer import make_producer, publish

    say = progress or (lambda _msg: None)
    work_dir = work_dir.resolve()
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        bootstrap, one_record = settings.kafka_bootstrap, settings.one_record_per_batch
        if not bootstrap:
            say("starting the embedded broker (Tansu)")
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=logs / "broker.log")).bootstrap
            one_record = True  # Tansu 0.6 ListOffsets bug (KNOWLEDGE.md)
        run = _run_settings(
            settings, work_dir, bootstrap, one_record=one_record, vehicle_idle_s=vehicle_idle_s
        )
        ensure_topics(bootstrap, run)
        say("writing the bench video")
        uris = _bench_video(run, work_dir)
        warmup = _bench_messages(synthetic_segments(1, 2, seed=1), uris, vehicle_prefix="warmup-")
        messages = _bench_messages(synthetic_segments(vehicles, per_vehicle), uris)
        expected = expected_clip_extents(messages, run)
        consumer = stack.enter_context(_clips_reader(run))
        producer = make_producer(bootstrap, run)
        stack.callback(producer.close)

        # Not timed: the joiner's start, its group join and a warm-up vehicle whose clip proves it consumes.
        started = time.monotonic()
        joiner_log = logs / "joiner.log"
        joiner = start_command(["joiner"], settings_env(run), joiner_log)
        stack.callback(stop_process, joiner)
        say("starting the joiner (Faust: group join ~30 s on Tansu) and waiting for a warm-up clip")
        publish(producer, warmup, run)
        want = set(expected_clip_extents(warmup, run))
        _await_clips(
            consumer, want, {m.vehicle_id for m in warmup}, joiner, joiner_log, timeout_s, say, "warm-up"
        )
        startup_s = time.monotonic() - started

        # Timed: from the first send until the last expected clip is read back.
        say(f"publishing {len(messages)} segments of {vehicles} vehicles")
        cpu0 = _tree_cpu_s(joiner.pid)
        t0 = time.monotonic()
        publish(producer, messages, run)
        publish_s = time.monotonic() - t0
        vehicle_ids = {m.vehicle_id for m in messages}
        note = f"{len(messages)} segments published in {publish_s:.1f} s"
        seen, unexpected = _await_clips(
            consumer, set(expected), vehicle_ids, joiner, joiner_log, timeout_s, say, note
        )
        wall_s = max(seen.values()) - t0
        cpu1 = _tree_cpu_s(joiner.pid)
    cpu = None if cpu0 is None or cpu1 is None else (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
    return BrokerJoinBench(
        segments=len(messages),
        vehicles=vehicles,
        expected_clips=len(expected),
        clips=len(seen),
        unexpected_clips=unexpected,
        publish_s=publish_s,
        wall_s=wall_s,
        vehicle_idle_s=vehicle_idle_s,
        startup_s=startup_s,
        joiner_cpu_s=None if cpu is None else cpu[0],
        clip_pool_cpu_s=None if cpu is None else cpu[1],
    )


def _run_settings(
    settings: Settings, work_dir: Path, bootstrap: str, *, one_record: bool, vehicle_idle_s: float
) -> Settings:
    """The run's own topics (a fresh prefix) and blobs; simulated footage of any age; the bench's idle time."""
    return settings.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "topic_prefix": f"{settings.topic_prefix}bench{uuid.uuid4().hex[:6]}.",
            "home": work_dir / "home",
            "blob_dir": work_dir / "blobs",
            "vehicle_idle_s": vehicle_idle_s,
            "settle_s": vehicle_idle_s / 2,
            "max_segment_age_s": SIMULATED_FLEET_JOIN["max_segment_age_s"],
            "one_record_per_batch": one_record,
        }
    )


def _bench_video(run: Settings, work_dir: Path) -> dict[View, tuple[str, SimSegment]]:
    """One tiny video per camera in the blob store, which every segment of that camera claims."""
    scenario = make_scenarios(3, 1, fleet_id="fleet-bench", vehicles=1, duration=10.0)[0]
    blobs = LocalBlobStore(run.blobs)
    segments = write_segments(scenario, work_dir / "video", segment_s=10.0, **BENCH_VIDEO)  # type: ignore[arg-type]
    return {g.camera: (blobs.put_file(f"bench/{g.camera.value}.mp4", g.path), g) for g in segments}


@contextmanager
def _clips_reader(run: Settings) -> Iterator[KafkaConsumer]:
    """A consumer of every partition of the run's clips topic, from the start, outside any group."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=run.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=8_000_000,
        max_partition_fetch_bytes=8_000_000,
    )
    try:
        consumer.assign([TopicPartition(run.topic(CLIPS_TOPIC), p) for p in range(run.partitions)])
        yield consumer
    finally:
        consumer.close()
