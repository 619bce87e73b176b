"""Join rules: windows, clips per driver, revisions, silence and arrival order, and the oracle properties under the
arrival patterns of real fleets (tests/strategies.py)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import clip_id_for
from schemas.taxonomy import View
from streams.joiner.join import (
    Admission,
    ClipPlan,
    JoinRules,
    VehicleJoinState,
    WindowManifest,
    advance,
    expected_clips,
    is_expired,
    merge_intervals,
    needs_tick,
    observe_tick,
    receive,
    window_starts,
    windows_to_load,
)
from tests.strategies import RULES, T0, Event, Fleet, fleets, seg, upload

BOTH = (View.ROAD, View.DRIVER)
ROAD = (View.ROAD,)


@dataclass
class Joiner:
    """Drives the pure join exactly as `streams/app.py` does: manifests loaded before `receive` and stored after
    each step, the state dropped once it expires. Keeps every plan it emitted."""

    rules: JoinRules = RULES
    state: VehicleJoinState | None = None
    manifests: dict[float, WindowManifest] = field(default_factory=dict)
    plans: list[ClipPlan] = field(default_factory=list)
    outcomes: list[Admission] = field(default_factory=list)
    peak_state_bytes: int = 0

    def read(self, event: Event) -> list[ClipPlan]:
        at, camera, message = event
        if message is None:
            if self.state is None:
                return []
            step = observe_tick(self.state, camera, at, self.rules)
        else:
            state = self.state or VehicleJoinState(fleet_id="f", vehicle_id="v")
            loaded = {w: self.manifests.get(w) for w in windows_to_load(state, message, self.rules)}
            step = receive(state, message, arrived=at, rules=self.rules, manifests=loaded)
        return self._apply(step)

    def drain(self, after: float) -> None:
        """What the app's timer does once every upload is read: tick both topics of a vehicle still waiting, until
        its state expires (ticks read before a vehicle had state were dropped, as the app drops them)."""
        for k in range(1, 4):
            if self.state is None:
                return
            for camera in View:
                self.read((after + k * self.rules.vehicle_idle_s, camera, None))

    def flush(self) -> list[ClipPlan]:
        return self._apply(advance(self.state, self.rules, flush=True)) if self.state else []

    def _apply(self, step) -> list[ClipPlan]:
        self.plans += step.plans
        self.outcomes += [a for _, a in step.outcomes]
        self.manifests |= {m.start: m for m in step.manifests}
        self.state = None if is_expired(step.state, self.rules) else step.state
        if self.state is not None:
            self.peak_state_bytes = max(self.peak_state_bytes, len(self.state.model_dump_json()))
        return step.plans

    def final(self) -> dict[str, tuple]:
        """The newest revision of each clip, as the database keeps it."""
        out: dict[str, ClipPlan] = {}
        for p in self.plans:
            if p.clip_id not in out or p.revision >= out[p.clip_id].revision:
                out[p.clip_id] = p
        return {k: key(p) for k, p in out.items()}


def key(p: ClipPlan) -> tuple:
    return (p.driver_id, p.start_ts, p.end_ts, p.views, tuple(s.segment_id for s in p.segments), p.revision)


def oracle(segments, rules=RULES) -> dict[str, tuple]:
    return {p.clip_id: key(p) for p in expected_clips(segments, rules)}


def spans(plans):
    return [(p.start_ts, p.end_ts, p.views) for p in plans]


def realtime(trip, *, latency=1.0, lag=None):
    """Each segment uploaded `latency` s after it ends (plus `lag` per camera), with the timer's ticks after each."""
    lag = lag or {}
    events: list[Event] = []
    for s in trip:
        at = s.end_ts + latency + lag.get(s.camera, 0.0)
        events.append((at, s.camera, upload(s)))
    return with_ticks(events)


def with_ticks(events: list[Event], rules=RULES) -> list[Event]:
    ticks = {
        round(at + d, 3) for at, _, _ in events for d in (rules.settle_s + 0.5, rules.vehicle_idle_s + 0.5)
    }
    out = events + [(t, c, None) for t in ticks for c in View]
    return sorted(out, key=lambda e: (e[0], e[2] is None, e[1].value))


def run(events, rules=RULES, drain=True) -> Joiner:
    joiner = Joiner(rules)
    for e in events:
        joiner.read(e)
    if drain and events:
        joiner.drain(max(e[0] for e in events))
    return joiner


def trip(start, end, length=10.0, driver="d", cameras=("road", "driver"), n=0):
    out = []
    for camera in cameras:
        t = start
        while t < end - 1e-9:
            out.append(seg(camera, t, min(t + length, end), n, driver))
            t += length
    return sorted(out, key=lambda s: (s.end_ts, s.camera.value))


# --- windows and clips -----------------------------------------------------------------------------------------


def test_windows_are_fixed_on_event_time():
    assert window_starts(10.0, 70.0, RULES) == [0.0, 64.0]
    assert window_starts(64.0, 128.0, RULES) == [64.0]
    assert window_starts(127.5, 128.5, RULES) == [64.0, 128.0]
    assert merge_intervals([(5, 8), (0, 4.5), (20, 30)], 1.0) == [(0, 8), (20, 30)]


def test_a_trip_is_cut_on_the_window_grid_and_clip_ids_do_not_depend_on_its_extent():
    base = 64 * 1000.0
    clips = expected_clips(trip(base + 20, base + 200), RULES)
    assert spans(clips) == [
        (base + 20, base + 64, BOTH),
        (base + 64, base + 128, BOTH),
        (base + 128, base + 192, BOTH),
        (base + 192, base + 200, BOTH),
    ]
    assert clips[1].clip_id == clip_id_for("v", base + 64, base + 128, "d")
    assert clips[1].revision == 14  # 7 segments of each camera overlap [64, 128)
    longer = expected_clips(trip(base + 10, base + 200), RULES)
    assert [c.clip_id for c in longer] == [c.clip_id for c in clips]


def test_a_view_without_its_partner_is_flagged_or_cut_to_the_overlap():
    segments = [seg("road", 0, 10), seg("driver", 0, 10), seg("road", 10, 30)]
    assert spans(expected_clips(segments, RULES)) == [(0, 30, BOTH)]
    assert spans(expected_clips([seg("road", 0, 30)], RULES)) == [(0, 30, ROAD)]
    assert spans(expected_clips(segments, JoinRules(single_view_clips=False))) == [(0, 10, BOTH)]
    assert expected_clips([seg("road", 0, 30)], JoinRules(single_view_clips=False)) == []


def test_each_driver_gets_their_own_clip_and_a_missing_id_is_never_filled_in():
    segments = [*trip(0, 40, driver="ann"), *trip(40, 60, driver="bob"), *trip(200, 230, driver=None, n=1)]
    clips = expected_clips(segments, RULES)
    assert [(c.driver_id, c.start_ts, c.end_ts) for c in clips] == [
        ("ann", 0, 40),
        ("bob", 40, 60),
        (None, 200, 230),
    ]
    assert len({c.clip_id for c in clips}) == 3


def test_a_sliver_shorter_than_one_frame_makes_no_clip():
    assert expected_clips([seg("road", 63.8, 64.0)], RULES) == []
    assert spans(expected_clips([seg("road", 63.4, 64.0)], RULES)) == [(63.4, 64.0, ROAD)]


# --- cadences: the same clips, once each -----------------------------------------------------------------------


def test_a_trip_uploaded_in_real_time_gives_the_clips_of_one_burst():
    """The issue's report: 10-s segments, each uploaded 1 s after it ends, lost 90 s of a 3-minute trip."""
    drive = trip(T0, T0 + 180)
    live = run(realtime(drive))
    burst = run(with_ticks([(T0 + 200 + 0.01 * i, s.camera, upload(s)) for i, s in enumerate(drive)]))
    assert live.final() == burst.final() == oracle(drive)
    assert len(live.plans) == len(oracle(drive)) == len(burst.plans)  # each clip emitted once: no revisions
    assert set(live.outcomes) == {Admission.ACCEPTED}


def test_an_outage_shorter_than_the_idle_time_changes_nothing_and_a_longer_one_only_revises():
    drive = trip(T0, T0 + 300)
    for outage, revisions in ((20.0, 0), (300.0, 0), (900.0, 1)):
        events = [
            (s.end_ts + 1 + (outage if T0 + 100 <= s.end_ts < T0 + 100 + outage else 0), s.camera, upload(s))
            for s in drive
        ]
        joiner = run(with_ticks(events))
        assert joiner.final() == oracle(drive), outage
        assert len(joiner.plans) - len(joiner.final()) == revisions, outage


def test_yesterdays_backlog_after_todays_trip_is_joined_like_any_other():
    yesterday, today = trip(T0 - 86400, T0 - 86400 + 150, n=1), trip(T0, T0 + 150)
    events = realtime(today) + with_ticks(
        [(T0 + 3 * 3600 + 0.01 * i, s.camera, upload(s)) for i, s in enumerate(yesterday)]
    )
    joiner = run(sorted(events, key=lambda e: (e[0], e[2] is None)))
    assert joiner.final() == oracle(yesterday + today)
    assert len(joiner.plans) == len(joiner.final())
    assert Admission.REVISES not in joiner.outcomes


def test_a_camera_lagging_by_minutes_still_gives_two_view_clips_once():
    drive = trip(T0, T0 + 240)
    for lag in (30.0, 180.0, 540.0):
        joiner = run(realtime(drive, lag={View.DRIVER: lag}))
        assert joiner.final() == oracle(drive), lag
        assert all(c[3] == BOTH for c in joiner.final().values())
        assert len(joiner.plans) == len(joiner.final()), lag


def test_a_dead_camera_gives_single_view_clips_after_the_idle_time():
    drive = trip(T0, T0 + 200, cameras=("road",))
    joiner = run(realtime(drive))
    assert joiner.final() == oracle(drive)
    assert {c[3] for c in joiner.final().values()} == {ROAD}


def test_segments_of_any_length_give_the_clips_of_one_burst():
    for length in (1.0, 5.0, 60.0, 300.0):
        drive = trip(T0, T0 + 900, length=length)
        joiner = run(realtime(drive))
        assert joiner.final() == oracle(drive), length
        assert len(joiner.plans) == len(joiner.final()), length


# --- revisions -------------------------------------------------------------------------------------------------


def test_an_upload_into_an_emitted_window_revises_its_clip_under_the_same_id():
    drive = trip(T0, T0 + 120)
    missing = next(s for s in drive if s.camera is View.DRIVER and s.start_ts == T0 + 30)
    joiner = run(realtime([s for s in drive if s is not missing]))
    first = dict(joiner.final())
    window = next(k for k, v in first.items() if v[1] <= T0 + 30 < v[2])
    for e in with_ticks([(T0 + 7200, missing.camera, upload(missing))]):
        joiner.read(e)
    assert joiner.final() == oracle(drive)
    assert joiner.final()[window][-1] == first[window][-1] + 1  # a new revision of the same clip id
    assert Admission.REVISES in joiner.outcomes
    assert [p.clip_id for p in joiner.plans[len(first) :]] == [window]  # the other clips are left alone


def test_duplicates_change_nothing_before_or_after_their_window_was_emitted():
    drive = trip(T0, T0 + 100)
    joiner = run(realtime(drive))
    emitted = len(joiner.plans)
    for e in with_ticks(
        [(T0 + 150, drive[0].camera, upload(drive[0])), (T0 + 9000, drive[-1].camera, upload(drive[-1]))]
    ):
        joiner.read(e)
    assert len(joiner.plans) == emitted
    assert joiner.outcomes[-2:] == [Admission.DUPLICATE, Admission.DUPLICATE]


# --- silence, arrival order, state -----------------------------------------------------------------------------


def test_a_replayed_backlog_sees_the_fleets_silences_not_the_joiners_outage():
    """Arrival times come from the records: a joiner that was down for an hour does not flush open windows, since
    nothing on the camera topics says the cameras were silent."""
    joiner = Joiner()
    for s in trip(T0, T0 + 40):
        joiner.read((s.end_ts + 1, s.camera, upload(s)))
    assert joiner.state is not None and not joiner.state.pending
    assert joiner.plans == []
    assert joiner.read((T0 + 41.5, View.ROAD, None)) == []  # a tick sent right after the last uploads


def test_one_topic_read_past_a_silence_does_not_judge_the_other_camera_by_it():
    """After a restart the joiner may read the road topic through a trip, and ticks long after it, before any of the
    driver topic: the driver camera was not silent then, so the trip stays two-view."""
    drive = trip(T0, T0 + 60)
    events = realtime(drive)
    road = [e for e in events if e[1] is View.ROAD]
    driver = [e for e in events if e[1] is View.DRIVER]
    joiner = run(road + driver)
    assert joiner.final() == oracle(drive)
    assert len(joiner.plans) == len(joiner.final())


def test_the_timer_ticks_a_vehicle_until_its_state_expires():
    s = seg("road", T0, T0 + 10)
    state = receive(
        VehicleJoinState(fleet_id="f", vehicle_id="v"), upload(s), arrived=T0 + 11, rules=RULES, manifests={}
    ).state
    assert state.pending and needs_tick(
        state, RULES, now=T0 + 12, quiet_s=5.0
    )  # the driver topic: never read
    state = observe_tick(state, View.DRIVER, T0 + 11, RULES).state
    assert not state.pending and not needs_tick(state, RULES, now=T0 + 12, quiet_s=5.0)  # both topics fresh
    assert needs_tick(state, RULES, now=T0 + 17, quiet_s=5.0)  # the window waits on time: tick
    idle = T0 + 11 + RULES.vehicle_idle_s
    step = observe_tick(observe_tick(state, View.DRIVER, idle, RULES).state, View.ROAD, idle, RULES)
    assert spans(step.plans) == [(T0, T0 + 10, ROAD)]
    assert [m.start for m in step.manifests] == window_starts(T0, T0 + 10, RULES)
    assert is_expired(step.state, RULES) and not needs_tick(step.state, RULES, now=idle + 60, quiet_s=5.0)


def test_state_holds_open_windows_only_and_survives_json():
    joiner = Joiner()
    for e in realtime(trip(T0, T0 + 3600)):  # an hour of driving in real time
        joiner.read(e)
        if joiner.state is not None:
            assert len(joiner.state.windows) <= 3  # the open windows, never the hour behind them
            assert VehicleJoinState.model_validate(joiner.state.model_dump(mode="json")) == joiner.state
    assert joiner.state is None  # idle: expired, nothing kept


# --- the oracle properties under real arrival patterns ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_any_upload_pattern_gives_the_oracles_clips(fleet: Fleet):
    joiner = run(fleet.in_arrival_order())
    assert joiner.final() == oracle(fleet.segments), fleet.patterns
    assert joiner.state is None  # every trip ended: nothing open, nothing pending


@settings(max_examples=200, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_however_the_two_topics_are_interleaved_the_clips_are_the_same(fleet: Fleet, rnd: random.Random):
    in_order, interleaved = run(fleet.in_arrival_order()), run(fleet.interleaved(rnd))
    assert interleaved.final() == in_order.final() == oracle(fleet.segments)


@settings(max_examples=200, deadline=None)
@given(fleets(patterns=("realtime", "burst", "lagging"), duplicates=False))
def test_uploads_within_the_idle_time_emit_each_clip_once(fleet: Fleet):
    """Latency second, but not wasteful: when each camera uploads its footage in order and within the idle time of
    recording it, every clip is emitted once (no revision: the inference runs once per clip)."""
    joiner = run(fleet.in_arrival_order())
    uploads = {c: [e[2] for e in t if e[2]] for c, t in fleet.topics.items()}
    in_order = all(a.start_ts <= b.start_ts for u in uploads.values() for a, b in itertools.pairwise(u))
    lag_beyond_idle = any(
        e[0] - e[2].end_ts > RULES.vehicle_idle_s for t in fleet.topics.values() for e in t if e[2]
    )
    # A camera silent for the idle time (or not heard from for that long since the vehicle's first upload) looks
    # gone: the other camera's windows are emitted without it, and revised when it uploads again. When its next
    # upload comes late, its footage's windows were already emitted; no rule can tell that silence from a camera
    # that is gone, so such fleets are outside the property (nothing is lost: the final clips are still the
    # oracle's, below). Found by hypothesis, 2026-12-02: a silence of 638 s between trips whose first driver
    # upload came 180 s after its recording; a driver camera first heard from 23 minutes into the road's uploads.
    # default: a fleet whose trips were all too short to record a segment uploads nothing (hypothesis, 2026-12-07).
    first = min((e[0] for t in fleet.topics.values() for e in t if e[2]), default=0.0)
    silent_for_the_idle_time = any(
        b - a >= RULES.vehicle_idle_s
        for t in fleet.topics.values()
        for a, b in itertools.pairwise([first, *(e[0] for e in t if e[2])])
    )
    if in_order and not lag_beyond_idle and not silent_for_the_idle_time:
        assert len(joiner.plans) == len(joiner.final())
    assert joiner.final() == oracle(fleet.segments)
