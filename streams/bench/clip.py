"""`drivecoach bench clip`: clip building against decoding the same frames alone (CPU seconds).

Both sides work on the clips the join's own rules plan from the files (`expected_clips`), and the decode-only
baseline decodes exactly the frames clip building must decode for them: each file from its start through the first
frame after the last sampled time it gives a clip, once per clip that uses it. So the ratio compares the same
decoding with and without the conversion of the sampled frames, stacking and npz: above 1 only by noise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from schemas.messages import SegmentRef
from schemas.taxonomy import View
from streams.builder.clip import build_clip_frames, sample_times
from streams.errors import DrivecoachError
from streams.joiner.join import ClipPlan, JoinRules, expected_clips
from streams.settings import Settings
from streams.simulate import SimSegment, make_scenarios, write_segments

# A footage file's view, from the words of its name, else of the nearest folder under --footage that names one.
VIEW_WORDS = {View.ROAD: frozenset({"road"}), View.DRIVER: frozenset({"driver", "cabin", "face"})}
FOOTAGE_RULE = (
    "a file is a road file when its name has the word road, a driver file when it has driver, cabin or face "
    "(a name with neither takes its folder's: road/, driver/, cabin/); each view's files are laid end to end "
    "in path order as one vehicle's consecutive segments"
)


class NoFootagePair(DrivecoachError):
    """`--footage` names a folder without at least one decodable road file and one decodable driver file."""


@dataclass(frozen=True)
class ClipBench:
    clips: int
    clip_seconds: float
    segment_files: int  # distinct files the clips use
    decoded_frames: int  # frames the baseline decodes, the same clip building grabs
    decode_cpu_s: float  # those frames decoded (grabbed), nothing else
    build_cpu_s: float  # the same frames decoded, sampled by timestamp, stacked, fit to the pixel budget, npz
    files: tuple[str, ...] = ()  # the files the clips use, in time order per view
    skipped: tuple[str, ...] = ()  # footage files not used, and why

    @property
    def decode_rate(self) -> float:
        return self.clip_seconds / self.decode_cpu_s

    @property
    def build_rate(self) -> float:
        return self.clip_seconds / self.build_cpu_s

    @property
    def ratio(self) -> float:
        """Clip building as a share of the decode-only limit (1.0 = as fast as decoding its frames alone)."""
        return self.build_rate / self.decode_rate


Plan = tuple[ClipPlan, dict[str, Path]]


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


def decode_span(path: Path, segment_start: float, until: float) -> int:
    """Decode every frame from the file's start through the first one after `until` (absolute s), as `decode_at`
    must to sample up to `until`; returns how many. Grabbed (demuxed and decoded), not converted to RGB: clip
    building converts only the sampled frames, so converting all here would let it beat its own limit."""
    cap = cv2.VideoCapture(str(path))
    frames = 0
    try:
        while cap.grab():
            frames += 1
            if segment_start + cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 > until:
                break
    finally:
        cap.release()
    return frames


def clip_spans(plan: ClipPlan, settings: Settings) -> list[tuple[SegmentRef, float]]:
    """(segment, its last sampled time) for each segment the clip samples, as `build_clip_frames` picks them."""
    times = sample_times(plan.start_ts, plan.end_ts, settings.sample_fps, settings.max_frames)
    spans = []
    for ref in plan.segments:
        inside = [t for t in times if ref.start_ts <= t < ref.end_ts]
        if inside:
            spans.append((ref, max(inside)))
    return spans


def measure(plans: list[Plan], settings: Settings, *, repeats: int = 1) -> ClipBench:
    """Decode-only over the clips' spans, then clip building, both `repeats` times over every clip (CPU time)."""
    spans = [(paths, clip_spans(plan, settings)) for plan, paths in plans]
    started = time.process_time()
    decoded = 0
    for _ in range(repeats):
        decoded += sum(
            decode_span(paths[ref.segment_id], ref.start_ts, until)
            for paths, refs in spans
            for ref, until in refs
        )
    decode_cpu = time.process_time() - started
    started = time.process_time()
    for _ in range(repeats):
        for plan, paths in plans:
            build_clip_frames(
                plan.start_ts,
                plan.end_ts,
                [(ref, paths[ref.segment_id]) for ref in plan.segments],
                fps=settings.sample_fps,
                max_frames=settings.max_frames,
                max_pixels=settings.max_pixels,
            ).to_npz()
    build_cpu = time.process_time() - started
    used = {paths[ref.segment_id]: None for paths, refs in spans for ref, _ in refs}
    return ClipBench(
        clips=repeats * len(plans),
        clip_seconds=repeats * sum(p.end_ts - p.start_ts for p, _ in plans),
        segment_files=len(used),
        decoded_frames=decoded,
        decode_cpu_s=decode_cpu,
        build_cpu_s=build_cpu,
        files=tuple(p.name for p in used),
    )


def _ref(seg: SimSegment) -> SegmentRef:
    return SegmentRef(
        segment_id=seg.segment_id,
        camera=seg.camera,
        start_ts=seg.start_ts,
        end_ts=seg.end_ts,
        video_uri=seg.path.as_uri(),
    )


def bench_clip(
    work: Path, settings: Settings, *, trips: int = 6, seed: int = 11, trip_s: float = 30.0
) -> ClipBench:
    """Simulated trips written as 10-s segments (not timed), then decode-only vs clip building on their clips."""
    rules = JoinRules.from_settings(settings)
    plans: list[Plan] = []
    for s in make_scenarios(seed, trips, vehicles=2, duration=trip_s):
        segments = write_segments(s, work / s.scenario_id)
        found = expected_clips(
            [_ref(g) for g in segments], rules, fleet_id=s.fleet_id, vehicle_id=s.vehicle_id
        )
        plans += [(p, {g.segment_id: g.path for g in segments}) for p in found]
    return measure(plans, settings)


def view_of(relative: Path) -> View | None:
    """The view a footage file stands for (FOOTAGE_RULE): its name's words decide, else its nearest folder's."""
    for part in (relative.stem, *reversed(relative.parent.parts)):
        words = set(re.split(r"[^a-z0-9]+", part.lower()))
        named = [view for view, view_words in VIEW_WORDS.items() if words & view_words]
        if len(named) == 1:
            return named[0]
    return None


@dataclass(frozen=True)
class Footage:
    segments: list[tuple[SegmentRef, Path]]  # each view's files end to end from 0 s
    skipped: list[str]  # 'name (why)' of the files named for a view that cannot be used


def find_footage(folder: Path) -> Footage:
    """Every decodable road and driver file under `folder` (FOOTAGE_RULE), as consecutive segments per view.

    Raises NoFootagePair unless both views have at least one file.
    """
    named = sorted(
        (path.relative_to(folder), view)
        for path in folder.rglob("*")
        if path.is_file() and (view := view_of(path.relative_to(folder))) is not None
    )
    next_start = dict.fromkeys(View, 0.0)
    segments: list[tuple[SegmentRef, Path]] = []
    skipped: list[str] = []
    for relative, view in named:
        path = folder / relative
        frames, duration = decode_all(path, retrieve=False)
        if frames < 2 or duration <= 0:
            skipped.append(f"{relative} (no video: {frames} frame{'' if frames == 1 else 's'} decode)")
            continue
        start = next_start[view]
        next_start[view] = start + duration
        ref = SegmentRef(
            segment_id=str(relative),
            camera=view,
            start_ts=start,
            end_ts=start + duration,
            video_uri=path.as_uri(),
        )
        segments.append((ref, path))
    counts = {view: sum(ref.camera is view for ref, _ in segments) for view in View}
    if not all(counts.values()):
        raise NoFootagePair(
            f"{folder} has no road and driver video pair ({counts[View.ROAD]} road and {counts[View.DRIVER]} "
            "driver files decode): name files with the word road, and driver, cabin or face, or put them in "
            "road/ and driver/ subfolders"
        )
    return Footage(segments=segments, skipped=skipped)


def footage_plans(segments: Iterable[tuple[SegmentRef, Path]], settings: Settings) -> list[Plan]:
    """The clips the join plans from the footage as one vehicle's segments, with each segment's file."""
    refs = list(segments)
    paths = {ref.segment_id: path for ref, path in refs}
    return [(p, paths) for p in expected_clips([r for r, _ in refs], JoinRules.from_settings(settings))]


def bench_clip_footage(folder: Path, settings: Settings, *, repeats: int = 5) -> ClipBench:
    """The same comparison on real footage: any folder of road and driver files (FOOTAGE_RULE), `repeats` times."""
    footage = find_footage(folder)
    result = measure(footage_plans(footage.segments, settings), settings, repeats=repeats)
    return replace(result, skipped=tuple(footage.skipped))
