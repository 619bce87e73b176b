"""Joining a vehicle's road and driver segments into clips: pure functions over a small per-vehicle state.

Semantics (the skeleton's; issue 4 hardens out-of-order, single-view and late handling):

- Each camera's segments are merged into coverage intervals; a gap of at most `skew_tolerance_s` between two
  segments of one camera counts as continuous (device clocks and cut points wobble).
- A clip covers a stretch where BOTH cameras have coverage (the intersection of the two coverages).
- A stretch is *closed* once both cameras have moved on past its end (each camera's frontier, the end of its
  latest segment, is beyond the stretch end plus the tolerance), or when the vehicle has been idle for the grace
  period (`flush`). Closed stretches are cut into equal clips of at most `clip_max_s`; an open stretch emits only
  full `clip_max_s` clips and keeps the rest until it closes. Stretches shorter than `clip_min_s` make no clip.
- Segments are idempotent by `segment_id`: a duplicate changes nothing.
- Clip ids come from vehicle and time range (`schemas.messages.clip_id_for`), so a replay gives the same ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from schemas.messages import SegmentRef, clip_id_for
from schemas.taxonomy import View

Interval = tuple[float, float]


class VehicleJoinState(BaseModel):
    """What a joiner remembers per vehicle (JSON in a changelog-backed Faust table)."""

    model_config = ConfigDict(frozen=True)

    fleet_id: str
    vehicle_id: str
    driver_id: str | None = None
    segments: tuple[SegmentRef, ...] = ()
    emitted_until: float = 0.0  # epoch seconds; nothing before it is emitted again
    last_seen_wall: float = 0.0


@dataclass(frozen=True)
class JoinRules:
    clip_max_s: float = 64.0
    clip_min_s: float = 2.0
    skew_tolerance_s: float = 1.0


@dataclass(frozen=True)
class ClipPlan:
    clip_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str | None
    start_ts: float
    end_ts: float
    segments: tuple[SegmentRef, ...]


def merge_intervals(intervals: list[Interval], tolerance: float) -> list[Interval]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + tolerance:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def add_segment(state: VehicleJoinState, segment: SegmentRef, *, driver_id: str | None, now: float) -> VehicleJoinState:
    if any(s.segment_id == segment.segment_id for s in state.segments):
        return state.model_copy(update={"last_seen_wall": now})
    return state.model_copy(
        update={
            "segments": (*state.segments, segment),
            "driver_id": driver_id or state.driver_id,
            "last_seen_wall": now,
        }
    )


def _coverage(state: VehicleJoinState, camera: View, tolerance: float) -> list[Interval]:
    return merge_intervals([(s.start_ts, s.end_ts) for s in state.segments if s.camera is camera], tolerance)


def _cut(start: float, end: float, max_s: float) -> list[Interval]:
    pieces = max(1, math.ceil((end - start) / max_s - 1e-9))
    step = (end - start) / pieces
    return [(start + k * step, start + (k + 1) * step if k < pieces - 1 else end) for k in range(pieces)]


def ready_clips(state: VehicleJoinState, rules: JoinRules, *, flush: bool = False) -> tuple[list[ClipPlan], VehicleJoinState]:
    """Clips that can be emitted now, and the state after emitting them."""
    road = _coverage(state, View.ROAD, rules.skew_tolerance_s)
    driver = _coverage(state, View.DRIVER, rules.skew_tolerance_s)
    if not road or not driver:
        return [], state
    horizon = min(road[-1][1], driver[-1][1])
    plans: list[ClipPlan] = []
    emitted_until = state.emitted_until
    for start, end in intersect(road, driver):
        start = max(start, emitted_until)
        if end <= start:
            continue
        closed = flush or end + rules.skew_tolerance_s < horizon
        if closed:
            if end - start >= rules.clip_min_s:
                pieces = _cut(start, end, rules.clip_max_s)
            else:
                pieces = []
            emitted_until = end
        else:
            full = math.floor((end - start) / rules.clip_max_s)
            pieces = [(start + k * rules.clip_max_s, start + (k + 1) * rules.clip_max_s) for k in range(full)]
            if pieces:
                emitted_until = pieces[-1][1]
        plans.extend(_plan(state, a, b) for a, b in pieces)
    keep = tuple(s for s in state.segments if s.end_ts > emitted_until - rules.skew_tolerance_s)
    return plans, state.model_copy(update={"emitted_until": emitted_until, "segments": keep})


def _plan(state: VehicleJoinState, start: float, end: float) -> ClipPlan:
    overlapping = tuple(
        sorted((s for s in state.segments if s.start_ts < end and s.end_ts > start), key=lambda s: (s.camera, s.start_ts))
    )
    return ClipPlan(
        clip_id=clip_id_for(state.vehicle_id, start, end),
        fleet_id=state.fleet_id,
        vehicle_id=state.vehicle_id,
        driver_id=state.driver_id,
        start_ts=start,
        end_ts=end,
        segments=overlapping,
    )


def has_open_stretch(state: VehicleJoinState, rules: JoinRules) -> bool:
    """True when a flush would emit something: the grace timer asks this before ticking a vehicle."""
    plans, _ = ready_clips(state, rules, flush=True)
    return bool(plans)
