"""Building the stacked clip: sample both views at 2 FPS by timestamp, road on top, driver below, on the 28-px grid.

Pure geometry and sampling functions first; `build_clip_frames` is the only function that touches files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from schemas.frames import encode_frames
from schemas.messages import SegmentRef, TelemetrySample
from schemas.taxonomy import View
from schemas.telemetry import clip_telemetry, per_frame
from streams.errors import BadSegment, VideoDecodeError
from streams.infra.video import probe_video

GRID = 28  # Qwen2.5-VL: 14-px patches merged 2x2
_decode_threads = 0  # FFmpeg's own choice unless `single_threaded` was called (builder pool processes)


def single_threaded() -> None:
    """Decode and resize on one thread in this process. A builder scales by processes, one per core (its CPU limit):
    FFmpeg's frame threads and OpenCV's on top only oversubscribe them. Measured on 960x540 H.264: threaded, two
    processes built 1.24x the clips of one; one thread each, a process decodes 0.38 s of wall per 8.8-s file
    against 0.27 s threaded, but they add up (docs/benchmarks.md, bench join)."""
    global _decode_threads
    _decode_threads = 1
    cv2.setNumThreads(1)


TRUNCATION_SLACK_S = (
    0.5  # a segment's video may end this much before its claimed end without counting as truncated
)


@dataclass(frozen=True)
class StackGeometry:
    """Both panels on the grid, and the aspect (width / height) each panel stands for.

    The grid rounds a panel away from its view's aspect (up to ~12% at the demo's 56x84), so a panel remembers the
    aspect it was shaped for: frames of that aspect fill it, as they always did, and a frame of another shape is
    fitted as if the panel had that aspect, keeping its own up to the same grid stretch. None: the panel's own shape.
    """

    width: int
    road_height: int
    driver_height: int
    road_aspect: float | None = None
    driver_aspect: float | None = None

    @property
    def height(self) -> int:
        return self.road_height + self.driver_height


def sample_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """Frame times at `fps` from the clip start; fewer, evenly spread, when that would exceed `max_frames`.

    The count is kept even because Qwen2.5-VL patches video two frames at a time.
    """
    count = max(2, min(max_frames, math.floor((end - start) * fps + 1e-9)))
    count -= count % 2
    step = (end - start) / count
    return [start + (k + 0.5) * step for k in range(count)]


def stack_geometry(road_wh: tuple[int, int], driver_wh: tuple[int, int], max_pixels: int) -> StackGeometry:
    """The largest 28-px-grid frame within `max_pixels` with both views at one width and their own aspect."""
    road_ratio = road_wh[1] / road_wh[0]
    driver_ratio = driver_wh[1] / driver_wh[0]
    width = GRID * max(1, math.ceil(math.sqrt(max_pixels / (road_ratio + driver_ratio)) / GRID))
    while True:
        height = GRID * max(1, round(width * (road_ratio + driver_ratio) / GRID))
        if width * height <= max_pixels or width == GRID:
            break
        width -= GRID
    road_height = max(1, min(height - 1, round(height * road_ratio / (road_ratio + driver_ratio))))
    return StackGeometry(
        width=width,
        road_height=road_height,
        driver_height=height - road_height,
        road_aspect=road_wh[0] / road_wh[1],
        driver_aspect=driver_wh[0] / driver_wh[1],
    )


def stack(road: np.ndarray | None, driver: np.ndarray | None, geometry: StackGeometry) -> np.ndarray:
    """One RGB frame: road fitted on top, driver fitted below; a missing view is a black panel.

    A view's files may differ in shape (a camera replaced mid-trip, a rotated file): each frame keeps its own
    aspect inside the panel, black bars filling the rest, instead of being stretched to the first file's shape.
    """
    out = np.zeros((geometry.height, geometry.width, 3), dtype=np.uint8)
    if road is not None:
        _fit_into(out[: geometry.road_height], road, geometry.road_aspect)
    if driver is not None:
        _fit_into(out[geometry.road_height :], driver, geometry.driver_aspect)
    return out


def _fit_into(panel: np.ndarray, frame: np.ndarray, panel_aspect: float | None) -> None:
    """Resize `frame` into the black `panel`, centred, at the largest size that keeps its aspect relative to
    `panel_aspect` (the aspect the panel stands for); a frame of that aspect fills the panel exactly."""
    height, width = panel.shape[:2]
    stands_for = panel_aspect or width / height
    aspect = frame.shape[1] / frame.shape[0]
    if aspect >= stands_for:
        fit_w, fit_h = width, min(height, max(1, round(height * stands_for / aspect)))
    else:
        fit_w, fit_h = min(width, max(1, round(width * aspect / stands_for))), height
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    panel[top : top + fit_h, left : left + fit_w] = cv2.resize(
        frame, (fit_w, fit_h), interpolation=cv2.INTER_AREA
    )


def decode_at(path: Path, segment_start: float, times: list[float]) -> dict[float, np.ndarray]:
    """RGB frames of one video at the given absolute times: sequential grab, retrieve only sampled frames.

    The frame shown at time t is the last one whose timestamp is <= t (timestamps from the container, so
    variable frame rate works); seeking is avoided because it is 5-8x slower on long-GOP H.264. A grabbed frame
    is only converted (retrieved) when the next frame is expected after the wanted time, judged by the longest
    frame gap seen so far: exact for constant frame rates, and at worst one frame late after an unusually
    long gap in a variable-rate file. Retrieving every frame instead cost a third of clip building.
    """
    cap = (
        cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, _decode_threads])
        if _decode_threads
        else cv2.VideoCapture(str(path))
    )
    if not cap.isOpened():
        raise VideoDecodeError(f"cannot open {path.name}")
    # Sideways-mounted cameras write a display matrix: decode upright as players do (explicit, not a default).
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    wanted = sorted(times)
    got: dict[float, np.ndarray] = {}
    pending: np.ndarray | None = None
    fps = cap.get(cv2.CAP_PROP_FPS)
    max_gap = 1.0 / fps if fps and fps > 0 else 0.0
    previous_ts: float | None = None
    previous_retrieved = True  # whether `pending` holds the previously grabbed frame
    idx = 0
    try:
        while idx < len(wanted) and cap.grab():
            ts = segment_start + cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if previous_ts is not None:
                max_gap = max(max_gap, ts - previous_ts)
            previous_ts = ts
            retrieved = False
            if wanted[idx] < ts and not previous_retrieved:
                pending, retrieved = (
                    _retrieve(cap, path),
                    True,
                )  # the skipped frame was the one: one frame late
            while idx < len(wanted) and wanted[idx] < ts:
                if pending is not None:
                    got[wanted[idx]] = pending
                idx += 1
            if idx < len(wanted) and not retrieved and (max_gap == 0.0 or ts + max_gap > wanted[idx]):
                pending, retrieved = _retrieve(cap, path), True
            previous_retrieved = retrieved
        # The last frame shows until the segment ends, but not for long: a file that stops well before the times
        # asked of it is truncated, and the caller is told by the times missing from the answer.
        while (
            idx < len(wanted)
            and pending is not None
            and previous_ts is not None
            and wanted[idx] <= previous_ts + max(TRUNCATION_SLACK_S, 2 * max_gap)
        ):
            got[wanted[idx]] = pending
            idx += 1
    finally:
        cap.release()
    if not got and times:
        raise VideoDecodeError(f"no frame decoded from {path.name}")
    return got


def _retrieve(cap: cv2.VideoCapture, path: Path) -> np.ndarray:
    ok, bgr = cap.retrieve()
    if not ok:
        raise VideoDecodeError(f"cannot decode a frame of {path.name}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class SegmentFault:
    """A segment whose video failed while its clip was built; the clip is built without the missing frames."""

    segment: SegmentRef
    reason: str  # dead-letter reason: corrupt_video | undecodable_video | truncated_video
    detail: str


def classify_fault(ref: SegmentRef, path: Path, reason: str, detail: str) -> SegmentFault:
    """A video that failed while its clip was built, named as the joiner's arrival probe names it: `corrupt_video`
    (no video container: garbage, an MP4 cut before its index, a still image) or `undecodable_video` (it opens, but
    no frame decodes), so a broken upload gets one reason whether or not the joiner probed it
    (DRIVECOACH_PROBE_ON_ARRIVAL). Only a failed video is probed again: a good one is decoded once. A video the
    probe passes failed further in, and keeps the builder's own `reason` (`truncated_video`, or `undecodable_video`
    for frames that stop decoding part-way)."""
    try:
        probe_video(path)
    except BadSegment as refusal:
        return SegmentFault(ref, refusal.reason, refusal.detail)
    return SegmentFault(ref, reason, detail)


def _view_frames(
    segments: list[tuple[SegmentRef, Path]], times: list[float]
) -> tuple[list[np.ndarray | None], list[SegmentFault]]:
    frames: dict[float, np.ndarray] = {}
    faults: list[SegmentFault] = []
    for ref, path in sorted(segments, key=lambda sp: sp[0].start_ts):
        inside = [t for t in times if ref.start_ts <= t < ref.end_ts]
        if not inside:
            continue
        try:
            got = decode_at(path, ref.start_ts, inside)
        except VideoDecodeError as err:
            faults.append(classify_fault(ref, path, "undecodable_video", str(err)))
            continue
        if len(got) < len(inside):
            shown_until = max(got, default=ref.start_ts) - ref.start_ts
            fault = classify_fault(
                ref,
                path,
                "truncated_video",
                f"{path.name}: frames stop near {shown_until:.2f} s "
                f"of a {ref.end_ts - ref.start_ts:.2f}-s segment",
            )
            faults.append(fault)
            if fault.reason != "truncated_video":
                continue  # not a video at all (a still image, one frame): left out, as the arrival probe leaves it
        frames.update(got)
    return [frames.get(t) for t in times], faults


def _size_of(frames: list[np.ndarray | None]) -> tuple[int, int] | None:
    """(width, height) of the first decoded frame of a view."""
    first = next((f for f in frames if f is not None), None)
    return None if first is None else (int(first.shape[1]), int(first.shape[0]))


@dataclass(frozen=True)
class ClipFrames:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    times: np.ndarray  # (T,) seconds from the clip start
    faults: tuple[
        SegmentFault, ...
    ] = ()  # segments that could not give all their frames (black panels instead)
    views: tuple[View, ...] = (View.ROAD, View.DRIVER)  # the views at least one frame of which decoded
    driver_top: int | None = None  # the driver view's first row (the road view's height)
    telemetry: tuple[TelemetrySample, ...] = ()  # the clip's samples, t from its start (schemas.telemetry)
    frame_telemetry: np.ndarray | None = None  # (T, 3) those samples at the frame times; None: no samples

    def to_npz(self) -> bytes:
        return encode_frames(self.frames, self.times, self.driver_top, self.frame_telemetry)


def build_clip_frames(
    start: float,
    end: float,
    segments: list[tuple[SegmentRef, Path]],
    *,
    fps: float,
    max_frames: int,
    max_pixels: int,
) -> ClipFrames:
    times = sample_times(start, end, fps, max_frames)
    road = [sp for sp in segments if sp[0].camera is View.ROAD]
    driver = [sp for sp in segments if sp[0].camera is View.DRIVER]
    road_frames, road_faults = _view_frames(road, times)
    driver_frames, driver_faults = _view_frames(driver, times)
    if all(f is None for f in road_frames + driver_frames):
        raise VideoDecodeError(
            f"no frame of the clip decodes: {'; '.join(f.detail for f in road_faults + driver_faults)}"
        )
    # Sizes from the decoded frames themselves: opening every file once more just to read its header cost
    # more than stacking (and a file's header may disagree with what it decodes to).
    geometry = stack_geometry(_size_of(road_frames) or (16, 9), _size_of(driver_frames) or (4, 3), max_pixels)
    stacked = np.stack([stack(r, d, geometry) for r, d in zip(road_frames, driver_frames, strict=True)])
    # Telemetry travels in the segment messages, not the videos: a segment whose video failed still tells it.
    telemetry = clip_telemetry(start, end, [ref for ref, _ in segments])
    return ClipFrames(
        frames=stacked,
        times=np.asarray([t - start for t in times], dtype=np.float32),
        faults=tuple(road_faults + driver_faults),
        views=tuple(
            view
            for view, frames in ((View.ROAD, road_frames), (View.DRIVER, driver_frames))
            if any(f is not None for f in frames)
        ),
        driver_top=geometry.road_height,
        telemetry=tuple(telemetry),
        frame_telemetry=per_frame(telemetry, [t - start for t in times]) if telemetry else None,
    )
