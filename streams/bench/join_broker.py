"""`drivecoach bench join` through the broker: one Faust joiner process against a baseline Faust agent that only
stores each upload, on the same backlog of records (wall seconds and CPU seconds of each process)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.messages import SegmentMessage
from schemas.taxonomy import View
from streams.bench.backlog import BacklogRun, time_backlog
from streams.bench.join import synthetic_segments
from streams.demo import SIMULATED_FLEET_JOIN, expected_clip_extents
from streams.errors import BenchError
from streams.infra.blobs import open_blob_store
from streams.infra.topics import CLIP_PLANS_TOPIC
from streams.settings import Settings
from streams.simulate import SimSegment, make_scenarios, write_segments

if TYPE_CHECKING:
    import subprocess

SEGMENTS_PER_VEHICLE_S = 2 / 10.0  # a driving vehicle uploads a road and a driver segment every 10 s


@dataclass(frozen=True)
class BrokerJoinBench:
    segments: int
    vehicles: int
    expected_clips: int  # the join oracle (`streams.demo.expected_clip_extents`) on the same messages
    clips: int  # expected clip plans that reached `clip-plans`
    unexpected_clips: int  # other plans of the measured vehicles (0 when the join agrees with its oracle)
    joiner: BacklogRun  # the default: no arrival probes, the builders find broken videos while decoding them
    joiner_with_probes: BacklogRun  # DRIVECOACH_PROBE_ON_ARRIVAL=true: its pool's CPU is the video probes
    baseline: BacklogRun

    def ratio_to_baseline(self, run: BacklogRun) -> float:
        """A joiner's rate over the baseline agent's: what our code costs on top of the framework."""
        return run.per_s / self.baseline.per_s

    def vehicles_per_core(self, run: BacklogRun) -> float | None:
        per_cpu_s = run.per_cpu_s
        return per_cpu_s / SEGMENTS_PER_VEHICLE_S if per_cpu_s else None


BENCH_VIDEO = {"road_size": (64, 36), "driver_size": (48, 36), "road_fps": 2.0, "driver_fps": 2.0}


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
    """The same workload as `bench_join`, through a real broker: one Faust joiner process, then the baseline agent.

    An embedded Tansu broker is started unless `settings.kafka_bootstrap` names one; the topics get a fresh prefix.
    Every upload is published first; then the joiner (the default: no arrival probes, the builders decode each
    video) starts and works through them as a backlog, timed by its own clock from the first record it takes to the
    last it finishes (startup and group join left out); then a joiner with arrival probes
    (DRIVECOACH_PROBE_ON_ARRIVAL=true); then the baseline Faust agent (`faust_baseline.py`: one table entry per
    upload), each on its own copy of the records. Each camera's segments all claim one tiny video (64x36 road,
    48x36 driver, 2 fps, 10 s), so the second joiner's video probe is real but cheap. Afterwards, untimed, every
    clip plan the oracle expects must be on `clip-plans`, and no other.
    """
    from streams.infra.broker import EmbeddedBroker, free_port
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
        base = _run_settings(
            settings, work_dir, bootstrap, one_record=one_record, vehicle_idle_s=vehicle_idle_s
        )
        say("writing the bench video")
        uris = _bench_video(base, work_dir)
        workload = synthetic_segments(vehicles, per_vehicle)
        timed: dict[str, BacklogRun] = {}
        plans: dict[str, tuple[set[str], int]] = {}
        runs: tuple[
            tuple[str, list[str], dict[str, bool]], ...
        ] = (  # each on its own topics (a fresh prefix), so each reads the whole backlog from its start
            ("joiner", ["joiner"], {"probe_on_arrival": False}),
            ("joiner with arrival probes", ["joiner"], {"probe_on_arrival": True}),
            ("baseline", ["-m", "streams.bench.faust_baseline"], {}),
        )
        for k, (name, command, update) in enumerate(runs):
            # Own vehicle ids too: the blob store keeps emitted windows' manifests, which would make a second run's
            # uploads of the same vehicles duplicates.
            messages = _bench_messages(workload, uris, vehicle_prefix=f"run{k}-")
            expected = expected_clip_extents(messages, base)
            run = base.model_copy(
                update={
                    **update,
                    "topic_prefix": f"{settings.topic_prefix}bench{uuid.uuid4().hex[:6]}.",
                    "metrics_port": free_port(),
                }
            )
            ensure_topics(bootstrap, run)
            producer = make_producer(bootstrap, run)
            say(f"publishing {len(messages)} segments of {vehicles} vehicles")
            publish(producer, messages, run)
            producer.flush()
            producer.close()
            say(f"the {name} works through the backlog (Faust group join ~30 s on Tansu first)")
            log = logs / f"{name.replace(' ', '-')}.log"
            env = settings_env(run)
            proc = (
                start_command(command, env, log)
                if command == ["joiner"]
                else _start_module(command, env, log)
            )
            try:
                timed[name] = time_backlog(
                    proc, log, run.metrics_port, "drivecoach_segments", len(messages), timeout_s=timeout_s
                )
                if command == ["joiner"]:
                    say("reading the clip plans back (untimed)")
                    plans[name] = _read_plans(run, set(expected), {m.vehicle_id for m in messages}, timeout_s)
            finally:
                stop_process(proc)
    return BrokerJoinBench(
        segments=len(messages),
        vehicles=vehicles,
        expected_clips=len(expected),
        clips=min(len(seen) for seen, _ in plans.values()),
        unexpected_clips=max(n for _, n in plans.values()),
        joiner=timed["joiner"],
        joiner_with_probes=timed["joiner with arrival probes"],
        baseline=timed["baseline"],
    )


def _start_module(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    import subprocess
    import sys

    from streams.infra.processes import die_with_parent

    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - one prctl call
        )


def _read_plans(run: Settings, want: set[str], vehicles: set[str], timeout_s: float) -> tuple[set[str], int]:
    """Read `clip-plans` until every wanted plan is there: (the wanted plan ids seen, other plans of `vehicles`)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=run.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    consumer.assign([TopicPartition(run.topic(CLIP_PLANS_TOPIC), p) for p in range(run.partitions)])
    seen: set[str] = set()
    unexpected = 0
    deadline = time.monotonic() + timeout_s
    try:
        while not want <= seen:
            if time.monotonic() > deadline:
                raise BenchError(f"{len(seen & want)}/{len(want)} clip plans after {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    plan = json.loads(record.value)
                    if plan["clip_id"] in want:
                        seen.add(plan["clip_id"])
                    elif plan["vehicle_id"] in vehicles:
                        unexpected += 1
    finally:
        consumer.close()
    return seen, unexpected


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
    blobs = open_blob_store(run)
    segments = write_segments(scenario, work_dir / "video", segment_s=10.0, **BENCH_VIDEO)  # type: ignore[arg-type]
    return {g.camera: (blobs.put_file(f"bench/{g.camera.value}.mp4", g.path), g) for g in segments}
