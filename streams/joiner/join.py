"""Joining a vehicle's road and driver segments into clips: pure functions over a small per-vehicle state.

Clips are a function of the set of segments a vehicle uploaded, never of when or in what order they arrived:
fixed event-time windows of `clip_max_s`, one clip per driver per window, and an upload into a window already
emitted revises its clip. Arrival only decides how soon a clip is emitted. `expected_clips` is the oracle (the same
clips from a complete set of segments at once). The rules and the reasons for them: docs/join.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.messages import SegmentMessage, SegmentRef, clip_id_for
from schemas.taxonomy import View
from streams.settings import Settings

Interval = tuple[float, float]
EPS = 1e-6
NEVER = -1e18  # "no time yet" (JSON has no -inf)


class Admission(StrEnum):
    ACCEPTED = "accepted"
    REVISES = "revises"  # accepted into a window that was already emitted: its clip is emitted again
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class JoinRules:
    clip_max_s: float = 64.0  # the window length
    clip_min_s: float = 0.5
    skew_tolerance_s: float = 1.0
    event_grace_s: float = 20.0  # event-time seconds a camera must be past a window's end
    single_view_clips: bool = True
    vehicle_idle_s: float = (
        600.0  # arrival-time seconds after which a silent camera (or vehicle) stops holding back
    )
    settle_s: float = 30.0  # arrival-time seconds a window must go without uploads before it is emitted

    @classmethod
    def from_settings(cls, settings: Settings) -> JoinRules:
        """Each field is the setting of the same name: one name per concept, env var to rule."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


class PendingUpload(BaseModel):
    """An upload read but not yet admitted: it arrived after the horizon."""

    model_config = ConfigDict(frozen=True)

    message: SegmentMessage  # claim-checked: no inline video
    arrived: float


class OpenWindow(BaseModel):
    """A window not emitted yet, or reopened from its manifest because an upload touched it after it was."""

    model_config = ConfigDict(frozen=True)

    start: float
    segments: tuple[SegmentRef, ...] = ()  # every known segment overlapping the window
    emitted_ids: tuple[str, ...] = ()  # the segments of its last emitted manifest (empty: never emitted)
    touched: float = NEVER  # arrival time of the latest upload admitted into it


class VehicleJoinState(BaseModel):
    """What a joiner remembers per vehicle (JSON in a changelog-backed Faust table)."""

    model_config = ConfigDict(frozen=True)

    fleet_id: str
    vehicle_id: str
    windows: tuple[OpenWindow, ...] = ()  # by start
    camera_time: dict[str, float] = {}  # per camera: the latest segment start (event time)
    camera_seen: dict[str, float] = {}  # per camera: arrival time of its latest upload
    camera_clock: dict[str, float] = {}  # per camera: latest arrival time read from its topic, upload or tick
    pending: tuple[PendingUpload, ...] = ()  # read, arrived after the horizon: not yet admitted
    first_seen: float = NEVER  # arrival time of the vehicle's first upload since its state was created


@dataclass(frozen=True)
class ClipPlan:
    clip_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str | None
    window_start: float
    start_ts: float
    end_ts: float
    views: tuple[View, ...]
    segments: tuple[SegmentRef, ...]
    revision: int  # the number of segments in the clip: a revision only ever adds segments


@dataclass(frozen=True)
class WindowManifest:
    """What the app keeps of an emitted window (the blob store's `windows/` entries): every segment overlapping it."""

    vehicle_id: str
    start: float
    segments: tuple[SegmentRef, ...]


# --- intervals and windows -------------------------------------------------------------------------------------


def merge_intervals(intervals: Iterable[Interval], tolerance: float) -> list[Interval]:
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


def window_starts(start_ts: float, end_ts: float, rules: JoinRules) -> list[float]:
    """The windows a segment overlaps."""
    first, last = math.floor(start_ts / rules.clip_max_s), math.ceil(end_ts / rules.clip_max_s) - 1
    return [k * rules.clip_max_s for k in range(first, max(first, last) + 1)]


def window_clips(
    fleet_id: str, vehicle_id: str, start: float, segments: Iterable[SegmentRef], rules: JoinRules
) -> list[ClipPlan]:
    """The clips of one window: one per driver, over that driver's coverage of the window."""
    end = start + rules.clip_max_s
    by_driver: dict[str | None, list[SegmentRef]] = {}
    for s in segments:
        if s.start_ts < end and s.end_ts > start:
            by_driver.setdefault(s.driver_id, []).append(s)
    plans = []
    for driver_id, own in sorted(by_driver.items(), key=lambda kv: kv[0] or ""):
        cover = {
            c: merge_intervals(
                ((max(s.start_ts, start), min(s.end_ts, end)) for s in own if s.camera is c),
                rules.skew_tolerance_s,
            )
            for c in View
        }
        spans = (
            merge_intervals(cover[View.ROAD] + cover[View.DRIVER], 0.0)
            if rules.single_view_clips
            else intersect(cover[View.ROAD], cover[View.DRIVER])
        )
        if not spans:
            continue
        a, b = spans[0][0], spans[-1][1]
        if b - a < rules.clip_min_s - EPS:
            continue
        views = tuple(c for c in View if any(x < b and y > a for x, y in cover[c]))
        used = tuple(
            sorted(
                (s for s in own if s.camera in views and s.start_ts < b and s.end_ts > a),
                key=lambda s: (s.camera, s.start_ts, s.segment_id),
            )
        )
        plans.append(
            ClipPlan(
                clip_id=clip_id_for(vehicle_id, start, end, driver_id),
                fleet_id=fleet_id,
                vehicle_id=vehicle_id,
                driver_id=driver_id,
                window_start=start,
                start_ts=a,
                end_ts=b,
                views=views,
                segments=used,
                revision=len(used),
            )
        )
    return plans


def expected_clips(
    segments: Iterable[SegmentRef], rules: JoinRules, *, fleet_id: str = "f", vehicle_id: str = "v"
) -> list[ClipPlan]:
    """The oracle: every clip the rules give for one vehicle's complete set of segments, in time order."""
    unique = list({s.segment_id: s for s in segments}.values())
    starts = sorted({w for s in unique for w in window_starts(s.start_ts, s.end_ts, rules)})
    return [p for w in starts for p in window_clips(fleet_id, vehicle_id, w, unique, rules)]


def expected_fleet_clips(uploads: Iterable[SegmentMessage], rules: JoinRules) -> list[ClipPlan]:
    """The oracle over a whole fleet's uploads: `expected_clips` per vehicle."""
    by_vehicle: dict[tuple[str, str], list[SegmentRef]] = {}
    for m in uploads:
        by_vehicle.setdefault((m.fleet_id, m.vehicle_id), []).append(m.ref(m.video_uri or ""))
    return [
        p
        for (fleet, vehicle), refs in by_vehicle.items()
        for p in expected_clips(refs, rules, fleet_id=fleet, vehicle_id=vehicle)
    ]


# --- the streaming join ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What reading one record did: the new state, the uploads it admitted (in arrival order), the clips that became
    final (new, or new revisions) and the manifests of the windows it emitted, to be stored after the clips."""

    state: VehicleJoinState
    outcomes: list[tuple[SegmentMessage, Admission]]
    plans: list[ClipPlan]
    manifests: list[WindowManifest]


def windows_to_load(state: VehicleJoinState, message: SegmentMessage, rules: JoinRules) -> list[float]:
    """The windows an upload touches that the state does not hold: the app loads their manifests (if any) before
    `receive`, so the join itself never does I/O."""
    held = {w.start for w in state.windows}
    return [w for w in window_starts(message.start_ts, message.end_ts, rules) if w not in held]


def receive(
    state: VehicleJoinState,
    message: SegmentMessage,
    *,
    arrived: float,
    rules: JoinRules,
    manifests: Mapping[float, WindowManifest | None],
) -> Step:
    """An upload read from its camera's topic at arrival time `arrived`: it waits in `pending` for the horizon.
    `manifests` holds what `windows_to_load` asked for (None: the window was never emitted)."""
    opened = [
        OpenWindow(start=w, segments=m.segments, emitted_ids=tuple(s.segment_id for s in m.segments))
        if (m := manifests.get(w))
        else OpenWindow(start=w)
        for w in windows_to_load(state, message, rules)
    ]
    camera = message.camera.value
    return advance(
        state.model_copy(
            update={
                "windows": tuple(sorted((*state.windows, *opened), key=lambda w: w.start)),
                "camera_clock": state.camera_clock
                | {camera: max(state.camera_clock.get(camera, NEVER), arrived)},
                "pending": (*state.pending, PendingUpload(message=message, arrived=arrived)),
            }
        ),
        rules,
    )


def observe_tick(state: VehicleJoinState, camera: View, at: float, rules: JoinRules) -> Step:
    """A tick read from `camera`'s topic, sent at arrival time `at`: that camera's uploads up to `at` are all in."""
    if state.camera_clock.get(camera.value, NEVER) >= at:
        return Step(state, [], [], [])
    return advance(state.model_copy(update={"camera_clock": state.camera_clock | {camera.value: at}}), rules)


def horizon(state: VehicleJoinState) -> float:
    """The arrival time up to which every camera's topic has been read."""
    return min(state.camera_clock.get(c.value, NEVER) for c in View)


def advance(state: VehicleJoinState, rules: JoinRules, *, flush: bool = False) -> Step:
    """Bring the join up to the horizon (past everything at the end of input): admit the pending uploads it passes
    in arrival order, and emit what is final just before each admission and at the horizon. Silence only grows while
    nothing is admitted, so these are the moments that decide, however the topics were read."""
    until = math.inf if flush else horizon(state)
    # Stable: one camera's uploads keep their order on its topic; ties across cameras go by camera.
    due = sorted(
        (p for p in state.pending if p.arrived <= until), key=lambda p: (p.arrived, p.message.camera.value)
    )
    later = tuple(p for p in state.pending if p.arrived > until)
    outcomes: list[tuple[SegmentMessage, Admission]] = []
    plans: list[ClipPlan] = []
    manifests: list[WindowManifest] = []
    for i, upload in enumerate(due):
        # The uploads still to admit stay pending, so the windows they touch are not emitted before them.
        state = state.model_copy(update={"pending": (*later, *due[i:])})
        state, got, stored = emit_final(state, rules, now=upload.arrived)
        plans, manifests = plans + got, manifests + stored
        state, admission = admit(
            state.model_copy(update={"pending": (*later, *due[i + 1 :])}),
            upload.message,
            now=upload.arrived,
            rules=rules,
        )
        outcomes.append((upload.message, admission))
    state, got, stored = emit_final(state, rules, flush=flush)
    return Step(state, outcomes, plans + got, manifests + stored)


def admit(
    state: VehicleJoinState, message: SegmentMessage, *, now: float, rules: JoinRules
) -> tuple[VehicleJoinState, Admission]:
    """Add one upload to the windows it overlaps (all held: `receive` opened them, and a window with a pending upload
    is not emitted); `now` is its arrival time."""
    assert message.video_uri is not None, "uploads are claim-checked before they are received"
    camera = message.camera.value
    alive = {
        "first_seen": now if state.first_seen == NEVER else state.first_seen,
        "camera_seen": state.camera_seen | {camera: max(state.camera_seen.get(camera, NEVER), now)},
    }
    starts = set(window_starts(message.start_ts, message.end_ts, rules))
    touched = [w for w in state.windows if w.start in starts]
    if any(s.segment_id == message.segment_id for w in touched for s in w.segments):
        return state.model_copy(update=alive), Admission.DUPLICATE
    ref = message.ref(message.video_uri)
    windows = tuple(
        w.model_copy(update={"segments": (*w.segments, ref), "touched": max(w.touched, now)})
        if w.start in starts
        else w
        for w in state.windows
    )
    revises = any(w.emitted_ids for w in touched)
    return state.model_copy(
        update={
            **alive,
            "windows": windows,
            "camera_time": state.camera_time
            | {camera: max(state.camera_time.get(camera, NEVER), message.start_ts)},
        }
    ), Admission.REVISES if revises else Admission.ACCEPTED


def idle_cameras(state: VehicleJoinState, rules: JoinRules, now: float | None = None) -> set[View]:
    """Cameras silent for `vehicle_idle_s` up to arrival time `now` (the horizon unless given); one never heard from
    counts from the vehicle's first upload."""
    now = horizon(state) if now is None else now
    return {c for c in View if now - state.camera_seen.get(c.value, state.first_seen) >= rules.vehicle_idle_s}


def watermark(state: VehicleJoinState, rules: JoinRules, now: float | None = None) -> float:
    """The slowest live camera's newest segment start minus the grace; infinite when every camera is idle."""
    idle = idle_cameras(state, rules, now)
    live = [state.camera_time.get(c.value, NEVER) for c in View if c not in idle]
    return min(live) - rules.event_grace_s if live else math.inf


def emit_final(
    state: VehicleJoinState, rules: JoinRules, *, flush: bool = False, now: float | None = None
) -> tuple[VehicleJoinState, list[ClipPlan], list[WindowManifest]]:
    """Close the windows that are final at arrival time `now` (the horizon unless given): their new or changed clips
    and their manifests, and the state without them."""
    now = horizon(state) if now is None else now
    mark = math.inf if flush else watermark(state, rules, now)
    waiting = {w for p in state.pending for w in window_starts(p.message.start_ts, p.message.end_ts, rules)}
    plans: list[ClipPlan] = []
    manifests: list[WindowManifest] = []
    kept: list[OpenWindow] = []
    for w in state.windows:
        final = flush or (
            w.start not in waiting
            and w.start + rules.clip_max_s + rules.skew_tolerance_s < mark
            and (mark == math.inf or now - w.touched >= rules.settle_s)
        )
        if not final:
            kept.append(w)
            continue
        emitted = set(w.emitted_ids)
        if any(s.segment_id not in emitted for s in w.segments):
            plans += [
                p
                for p in window_clips(state.fleet_id, state.vehicle_id, w.start, w.segments, rules)
                if any(s.segment_id not in emitted for s in p.segments)
            ]
            manifests.append(WindowManifest(state.vehicle_id, w.start, w.segments))
    if len(kept) == len(state.windows):
        return state, plans, manifests
    return state.model_copy(update={"windows": tuple(kept)}), plans, manifests


def is_expired(state: VehicleJoinState, rules: JoinRules) -> bool:
    """Nothing open, nothing pending and every camera idle: the state can be deleted (a later upload starts anew)."""
    return not state.windows and not state.pending and len(idle_cameras(state, rules)) == len(View)


def needs_tick(state: VehicleJoinState, rules: JoinRules, *, now: float, quiet_s: float) -> bool:
    """True when the vehicle waits on time alone (uploads pending, windows open, or a state not yet expired) and
    some camera's topic has shown nothing for `quiet_s` of wall time: the app's timer then ticks its topics."""
    return not is_expired(state, rules) and any(
        now - state.camera_clock.get(c.value, NEVER) >= quiet_s for c in View
    )
