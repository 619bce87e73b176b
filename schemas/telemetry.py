"""A clip's telemetry: the samples of its segments placed on the clip's time base, and read at its frame times.

The builder places each camera's frames by that camera's own segment timestamps (its device clock): skew between
cameras is tolerated, not corrected (streams/builder/clip.py). A segment's telemetry is stamped on the same clock
as the segment, so placing a sample is what placing a frame is: seconds from the clip start on the clock of the
segment that carried it. Both cameras of a vehicle may carry the vehicle's telemetry; one camera's is taken, so a
reading is never counted twice (as `schemas.distance.clip_distance_km` counts the distance once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

from schemas.messages import SegmentRef, TelemetrySample
from schemas.taxonomy import View

# The per-frame columns of a clip frames file's `telemetry` array: what the model and the motion rules read.
FRAME_COLUMNS: Final = ("speed_kmh", "accel_ms2", "yaw_rate_dps")
# Readings at most this far apart are bridged by a straight line: one dropped sample of a 1-Hz stream is (2 s), a
# longer dropout is not. A frame that cannot be bridged holds the nearest reading within half of it, else NaN.
MAX_GAP_S: Final = 2.5
_READINGS: Final = ("speed_kmh", "accel_ms2", "yaw_rate_dps", "lat", "lon", "speed_limit_kmh")


def _covers(s: SegmentRef, start: float, end: float) -> bool:
    return s.start_ts < end and s.end_ts > start


def _camera_segments(start: float, end: float, segments: Sequence[SegmentRef]) -> list[SegmentRef]:
    """The segments of the one camera whose telemetry the clip takes: the first of road, driver whose every
    segment in the clip carries telemetry (a clip told in full); else the first that carries any (a partial
    account beats none); else none. Road first: it is the camera fleets mount to watch the road."""
    by_camera = {
        c: [s for s in segments if s.camera is c and _covers(s, start, end)] for c in (View.ROAD, View.DRIVER)
    }
    for complete in (True, False):
        for chosen in by_camera.values():
            carried = [bool(s.telemetry) for s in chosen]
            if any(carried) and (all(carried) or not complete):
                return chosen
    return []


def _clean(sample: TelemetrySample, t: float) -> TelemetrySample:
    """The sample at clip time `t`, a reading that is not a finite number as None: NaN would become null in the
    clip's JSON anyway, and Postgres's JSONB refuses NaN. One spelling of "missing" keeps clips comparable."""
    missing = {k: None for k in _READINGS if (v := getattr(sample, k)) is not None and not math.isfinite(v)}
    return sample.model_copy(update={"t": t, **missing})


def clip_telemetry(start: float, end: float, segments: Sequence[SegmentRef]) -> list[TelemetrySample]:
    """The telemetry of the clip over [start, end]: one camera's samples (`_camera_segments`), t in seconds from
    the clip start, sorted by t. A reading carried twice (the boundary sample both neighbouring segments carry, a
    re-sent or re-cut upload) is kept once: the first by segment start, then segment id, so the answer depends on
    the set of segments and never on the order the join saw them in."""
    chosen = sorted(
        _camera_segments(start, end, segments), key=lambda s: (s.start_ts, s.end_ts, s.segment_id)
    )
    seen: set[float] = set()
    out: list[TelemetrySample] = []
    for segment in chosen:
        for sample in segment.telemetry:
            if not (math.isfinite(sample.t) and start <= sample.t <= end) or sample.t in seen:
                continue
            seen.add(sample.t)
            # Rounded to the microsecond: device times near 1.7e9 s carry float noise of ~1e-7 s after the shift.
            out.append(_clean(sample, round(sample.t - start, 6)))
    out.sort(key=lambda s: s.t)
    return out


def _column(samples: Sequence[TelemetrySample], name: str, times: np.ndarray) -> np.ndarray:
    """One reading at `times`: linear between the bracketing valid readings when they are at most MAX_GAP_S apart,
    else the nearest valid reading within MAX_GAP_S / 2 (the edges of the clip or of a dropout), else NaN."""
    points: dict[float, float] = {}
    for s in samples:
        v = getattr(s, name)
        if v is not None and math.isfinite(v) and math.isfinite(s.t):
            points.setdefault(s.t, float(v))  # a duplicate t: the first, as clip_telemetry keeps it
    out = np.full(len(times), np.nan)
    if not points:
        return out
    ts = np.array(sorted(points))
    vs = np.array([points[t] for t in ts])
    right = np.searchsorted(ts, times, side="left")  # first reading at or after each time
    left = np.searchsorted(ts, times, side="right") - 1  # last reading at or before each time
    has_l, has_r = left >= 0, right < len(ts)
    lt, lv = ts[np.maximum(left, 0)], vs[np.maximum(left, 0)]
    rt, rv = ts[np.minimum(right, len(ts) - 1)], vs[np.minimum(right, len(ts) - 1)]
    # Nearest within half the gap first, then the line over it where both ends exist and are close enough.
    dl = np.where(has_l, times - lt, np.inf)
    dr = np.where(has_r, rt - times, np.inf)
    out = np.where(np.minimum(dl, dr) <= MAX_GAP_S / 2, np.where(dl <= dr, lv, rv), out)
    bridged = has_l & has_r & (rt - lt <= MAX_GAP_S)
    span = np.where(rt > lt, rt - lt, 1.0)
    line = np.where(rt > lt, lv + (rv - lv) * (times - lt) / span, lv)
    return np.where(bridged, line, out)


def per_frame(samples: Sequence[TelemetrySample], times: Sequence[float]) -> np.ndarray:
    """(T, 3) float32: FRAME_COLUMNS at the frame `times`, both on the same time base (the clip's). Each column is
    read from its own valid readings, so an IMU dropout leaves speed intact; a stretch without readings is NaN,
    never zero, since a zero would read as standing still or driving straight."""
    at = np.asarray(times, dtype=np.float64)
    return np.stack([_column(samples, name, at) for name in FRAME_COLUMNS], axis=1).astype(np.float32)


__all__ = ["FRAME_COLUMNS", "MAX_GAP_S", "clip_telemetry", "per_frame"]
