"""Joining a vehicle's road and driver segments into clips: pure functions over a small per-vehicle state.

Semantics (an interval join on event time, as Kafka Streams and Flink define it):

- **Coverage.** Each camera's segments are merged into coverage intervals; a gap of at most `skew_tolerance_s`
  between two segments of one camera counts as continuous (device clocks and cut points wobble).
- **Regions.** Where both cameras have coverage is a two-view region; where only one has, a single-view region
  (kept, flagged by its `views`, when `single_view` is on; dropped otherwise).
- **Cutting.** A region is cut into consecutive clips of `clip_max_s` from its start; the last clip is the
  remainder, and a remainder shorter than `clip_min_s` makes no clip.
- **Event time and grace.** Each camera's *stream time* is the latest start among its segments (a segment is an
  interval; its start is when it happened). The vehicle's *watermark* is the slower camera's stream time minus
  `grace_s`: as in Flink, an operator with two inputs follows the minimum of its inputs' watermarks, so a burst
  of one camera's topic, read ahead of the other's, cannot make the other camera's on-time segments late.
- **Arrival order across the two topics.** Kafka gives no order between the road and the driver topic: after a
  restart a joiner may read a minute of one before any of the other. So uploads first wait in `pending`, and are
  admitted to the join in arrival order (the Kafka record timestamps) up to the *horizon*: the arrival time up to
  which every camera's topic has been read (each camera's *clock* is the latest arrival seen on its own topic, an
  upload's or a *tick*'s; `observe_tick`: the app sends ticks into each camera topic behind any backlog). This is
  Kafka Streams' timestamp-ordered choice between input partitions; it makes the join a function of what the fleet
  sent and when, never of how the joiner happened to read it.
- **Idleness, on arrival time.** A camera that has sent nothing for `camera_idle_s` up to the horizon (or never
  has, since the vehicle's first upload) stops holding the watermark back (Flink's idleness), so a vehicle with
  one dead camera still makes single-view clips while it drives; when every camera is idle the vehicle's open
  stretch is flushed (the end of a trip). Because the horizon is one clock for both cameras, a joiner replaying a
  backlog after a crash sees exactly the silences the fleet had: never its own outage, and never one camera's
  silence judged at a time the other camera's topic has been read past (which would split a trip into a
  road-only and a two-view clip; `test_however_the_two_topics_are_interleaved...` interleaves them at random).
- A clip is final, and emitted, once its end plus the tolerance is behind the watermark (and, for the remainder,
  once its whole region is); `flush` (end of input) treats the watermark as infinite. So any arrival order in
  which each segment arrives before the watermark passes its start gives the same clips as in-order arrival.
- **Late data.** A segment that starts within the tolerance of what has already been emitted is *late*: it
  could no longer change those clips, so it is refused (the app sends it to the dead-letter topic, reason
  `late`).
- **Idempotence.** A duplicate segment id changes nothing. Clip ids come from vehicle and time range
  (`schemas.messages.clip_id_for`), so a replay gives the same ids and writes upsert.

`expected_clips` is the oracle: the same rules applied to a complete set of segments at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.messages import SegmentMessage, SegmentRef, clip_id_for
from schemas.taxonomy import View

Interval = tuple[float, float]
EPS = 1e-6
NEVER = -1e18  # "no time yet" (JSON has no -inf)


class Admission(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


class PendingUpload(BaseModel):
    """An upload read but not yet admitted: it arrived after the horizon."""

    model_config = ConfigDict(frozen=True)

    message: SegmentMessage  # claim-checked (no inline video): a late one is dead-lettered as it is kept
    arrived: float


class VehicleJoinState(BaseModel):
    """What a joiner remembers per vehicle (JSON in a changelog-backed Faust table)."""

    model_config = ConfigDict(frozen=True)

    fleet_id: str
    vehicle_id: str
    driver_id: str | None = None
    segments: tuple[SegmentRef, ...] = ()
    recent_ids: tuple[str, ...] = ()  # ids of pruned segments still near the frontier: duplicates, not late
    emitted_until: float = NEVER  # event time; everything before it is final
    camera_time: dict[str, float] = {}  # per camera: the latest segment start (event time)
    camera_seen: dict[str, float] = {}  # per camera: arrival time of its latest segment
    camera_clock: dict[str, float] = {}  # per camera: latest arrival time read from its topic, upload or tick
    pending: tuple[PendingUpload, ...] = ()  # read, arrived after the horizon: not yet admitted
    first_seen: float = NEVER  # arrival time of the vehicle's first segment
    last_seen: float = NEVER  # arrival time of the vehicle's latest segment


@dataclass(frozen=True)
class JoinRules:
    clip_max_s: float = 64.0
    clip_min_s: float = 2.0
    skew_tolerance_s: float = 1.0
    grace_s: float = 10.0  # event-time seconds an upload may trail the vehicle's newest one
    single_view: bool = True
    camera_idle_s: float = 5.0  # arrival-time seconds after which a silent camera stops holding clips back


@dataclass(frozen=True)
class ClipPlan:
    clip_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str | None
    start_ts: float
    end_ts: float
    views: tuple[View, ...]
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


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Parts of sorted, disjoint `a` not covered by sorted, disjoint `b`."""
    out: list[Interval] = []
    for start, end in a:
        cursor = start
        for bs, be in b:
            if be <= cursor or bs >= end:
                continue
            if bs > cursor:
                out.append((cursor, bs))
            cursor = max(cursor, be)
        if cursor < end:
            out.append((cursor, end))
    return out


def regions(segments: tuple[SegmentRef, ...] | list[SegmentRef], rules: JoinRules) -> list[tuple[Interval, tuple[View, ...]]]:
    """Two-view and single-view regions in time order."""
    road = merge_intervals([(s.start_ts, s.end_ts) for s in segments if s.camera is View.ROAD], rules.skew_tolerance_s)
    driver = merge_intervals([(s.start_ts, s.end_ts) for s in segments if s.camera is View.DRIVER],
                             rules.skew_tolerance_s)
    both = intersect(road, driver)
    out: list[tuple[Interval, tuple[View, ...]]] = [(r, (View.ROAD, View.DRIVER)) for r in both]
    if rules.single_view:
        out += [(r, (View.ROAD,)) for r in subtract(road, both)]
        out += [(r, (View.DRIVER,)) for r in subtract(driver, both)]
    return sorted(out, key=lambda rv: rv[0])


def pieces(start: float, end: float, rules: JoinRules) -> list[tuple[Interval, bool]]:
    """Consecutive clips of `clip_max_s` from `start`; (interval, is_full). The remainder comes last."""
    out: list[tuple[Interval, bool]] = []
    cursor = start
    while end - cursor > rules.clip_max_s + EPS:
        out.append(((cursor, cursor + rules.clip_max_s), True))
        cursor += rules.clip_max_s
    out.append(((cursor, end), abs(end - cursor - rules.clip_max_s) <= EPS))
    return out


def add_segment(
    state: VehicleJoinState, segment: SegmentRef, *, driver_id: str | None, now: float, rules: JoinRules | None = None,
) -> tuple[VehicleJoinState, Admission]:
    """Admit one upload to the join; `now` is its arrival time (its Kafka record timestamp). The app goes through
    `receive`, which calls this in arrival order."""
    rules = rules or JoinRules()
    camera = segment.camera.value
    alive = {
        "last_seen": max(state.last_seen, now),
        "first_seen": now if state.first_seen == NEVER else state.first_seen,
        "camera_seen": state.camera_seen | {camera: max(state.camera_seen.get(camera, NEVER), now)},
    }
    seen = segment.segment_id in state.recent_ids or any(s.segment_id == segment.segment_id for s in state.segments)
    if seen:
        return state.model_copy(update=alive), Admission.DUPLICATE
    if segment.start_ts - rules.skew_tolerance_s <= state.emitted_until + EPS:  # it would merge into emitted clips
        return state.model_copy(update=alive), Admission.LATE
    return state.model_copy(
        update={
            **alive,
            "segments": (*state.segments, segment),
            "driver_id": driver_id or state.driver_id,
            "camera_time": state.camera_time | {camera: max(state.camera_time.get(camera, NEVER), segment.start_ts)},
        }
    ), Admission.ACCEPTED


Outcome = tuple[SegmentMessage, Admission]


@dataclass(frozen=True)
class Step:
    """What reading one record did: the new state, the uploads it admitted (in arrival order; `LATE` ones are for
    the dead-letter topic) and the clips that became final."""

    state: VehicleJoinState
    outcomes: list[Outcome]
    plans: list[ClipPlan]


def horizon(state: VehicleJoinState) -> float:
    """The arrival time up to which every camera's topic has been read."""
    return min(state.camera_clock.get(c.value, NEVER) for c in View)


def receive(state: VehicleJoinState, message: SegmentMessage, *, arrived: float, rules: JoinRules) -> Step:
    """An upload read from its camera's topic at arrival time `arrived`: it waits in `pending` for the horizon."""
    camera = message.camera.value
    return advance(state.model_copy(update={
        "camera_clock": state.camera_clock | {camera: max(state.camera_clock.get(camera, NEVER), arrived)},
        "pending": (*state.pending, PendingUpload(message=message, arrived=arrived)),
    }), rules)


def observe_tick(state: VehicleJoinState, camera: View, at: float, rules: JoinRules) -> Step:
    """A tick read from `camera`'s topic, sent at arrival time `at`: that camera's uploads up to `at` are all in."""
    if state.camera_clock.get(camera.value, NEVER) >= at:
        return Step(state, [], [])
    return advance(state.model_copy(update={"camera_clock": state.camera_clock | {camera.value: at}}), rules)


def advance(state: VehicleJoinState, rules: JoinRules, *, flush: bool = False) -> Step:
    """Bring the join up to the horizon (past everything at the end of input): admit the pending uploads
    it passes in arrival order, and judge idleness just before each admission and at the horizon. Idleness only
    grows while nothing is admitted, so these are the moments that decide, however the topics were read."""
    until = math.inf if flush else horizon(state)
    # Stable: one camera's uploads keep their order on its topic; ties across cameras go by camera.
    due = sorted((p for p in state.pending if p.arrived <= until), key=lambda p: (p.arrived, p.message.camera.value))
    state = state.model_copy(update={"pending": tuple(p for p in state.pending if p.arrived > until)})
    outcomes: list[Outcome] = []
    plans: list[ClipPlan] = []
    for upload in due:
        got, state = ready_clips(state, rules, now=upload.arrived)
        plans += got
        message = upload.message
        assert message.video_uri is not None, "uploads are claim-checked before they are received"
        state, admission = add_segment(state, message.ref(message.video_uri), driver_id=message.driver_id,
                                       now=upload.arrived, rules=rules)
        outcomes.append((message, admission))
    got, state = ready_clips(state, rules, flush=flush)
    return Step(state, outcomes, plans + got)


def idle_cameras(state: VehicleJoinState, rules: JoinRules, now: float | None = None) -> set[View]:
    """Cameras silent for `camera_idle_s` up to arrival time `now` (the horizon unless given); one never heard from
    counts from the vehicle's first upload."""
    now = horizon(state) if now is None else now
    return {c for c in View if now - state.camera_seen.get(c.value, state.first_seen) >= rules.camera_idle_s}


def watermark(state: VehicleJoinState, rules: JoinRules, now: float | None = None) -> float:
    """The slowest non-idle camera's stream time minus the grace; infinite when every camera is idle."""
    idle = idle_cameras(state, rules, now)
    waiting = [state.camera_time.get(c.value, NEVER) for c in View if c not in idle]
    return min(waiting) - rules.grace_s if waiting else math.inf


def ready_clips(
    state: VehicleJoinState, rules: JoinRules, *, flush: bool = False, now: float | None = None
) -> tuple[list[ClipPlan], VehicleJoinState]:
    """Clips that are final at arrival time `now` (the horizon unless given), and the state after emitting them."""
    mark = math.inf if flush else watermark(state, rules, now)
    start_from = frontier = state.emitted_until
    plans: list[ClipPlan] = []
    candidates = (
        (piece, full, end, views)
        for (start, end), views in regions(state.segments, rules) if end > start_from + EPS
        for piece, full in pieces(max(start, start_from), end, rules)
    )
    for (a, b), full, region_end, views in candidates:
        region_closed = region_end + rules.skew_tolerance_s < mark
        if b + rules.skew_tolerance_s >= mark or not (full or region_closed):
            break  # not final yet, and no later clip can be
        if b - a >= rules.clip_min_s - EPS:
            plans.append(_plan(state, a, b, views))
        frontier = b
    if frontier == state.emitted_until:
        return plans, state
    keep = tuple(s for s in state.segments if s.end_ts > frontier - rules.skew_tolerance_s)
    pruned = [s.segment_id for s in state.segments if s.end_ts <= frontier - rules.skew_tolerance_s]
    recent = (*state.recent_ids, *pruned)[-256:]
    return plans, state.model_copy(update={"emitted_until": frontier, "segments": keep, "recent_ids": recent})


def _plan(state: VehicleJoinState, start: float, end: float, views: tuple[View, ...]) -> ClipPlan:
    overlapping = tuple(sorted(
        (s for s in state.segments if s.camera in views and s.start_ts < end and s.end_ts > start),
        key=lambda s: (s.camera, s.start_ts),
    ))
    return ClipPlan(
        clip_id=clip_id_for(state.vehicle_id, start, end), fleet_id=state.fleet_id, vehicle_id=state.vehicle_id,
        driver_id=state.driver_id, start_ts=start, end_ts=end, views=views, segments=overlapping,
    )


def needs_tick(state: VehicleJoinState, rules: JoinRules, *, now: float, quiet_s: float) -> bool:
    """True when the vehicle waits on time alone (uploads pending, or a stretch a flush would emit) and some
    camera's topic has shown nothing for `quiet_s` of wall time: the grace timer then ticks its topics."""
    waiting = bool(state.pending) or bool(ready_clips(state, rules, flush=True)[0])
    return waiting and any(now - state.camera_clock.get(c.value, NEVER) >= quiet_s for c in View)


def expected_clips(segments: list[SegmentRef], rules: JoinRules) -> list[tuple[float, float, tuple[View, ...]]]:
    """The oracle: every clip the rules give for one vehicle's complete, de-duplicated set of segments."""
    unique = list({s.segment_id: s for s in segments}.values())
    out = []
    for (start, end), views in regions(unique, rules):
        for (a, b), _ in pieces(start, end, rules):
            if b - a >= rules.clip_min_s - EPS:
                out.append((a, b, views))
    return out
