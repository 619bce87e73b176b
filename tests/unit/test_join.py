"""Join rules: regions, cutting, watermark and grace, late data, idempotence, and the oracle property."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import clip_id_for
from schemas.taxonomy import View
from streams.join import (
    Admission,
    JoinRules,
    VehicleJoinState,
    add_segment,
    advance,
    expected_clips,
    idle_cameras,
    intersect,
    merge_intervals,
    needs_tick,
    observe_tick,
    ready_clips,
    receive,
    subtract,
)
from tests.strategies import RULES, fleet_uploads, seg, upload

BOTH = (View.ROAD, View.DRIVER)




def feed(segments, rules=RULES, flush=False):
    state = VehicleJoinState(fleet_id="f", vehicle_id="v")
    plans, admissions = [], []
    for s in segments:
        state, admission = add_segment(state, s, driver_id="d", now=0, rules=rules)
        admissions.append(admission)
        got, state = ready_clips(state, rules)
        plans += got
    if flush:
        got, state = ready_clips(state, rules, flush=True)
        plans += got
    return plans, state, admissions


def spans(plans):
    return [(p.start_ts, p.end_ts, p.views) for p in plans]


def test_interval_helpers():
    assert merge_intervals([(5, 8), (0, 4.5), (20, 30)], 1.0) == [(0, 8), (20, 30)]
    assert merge_intervals([(0, 4), (6, 8)], 1.0) == [(0, 4), (6, 8)]
    assert intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert subtract([(0, 10), (20, 30)], [(2, 4), (25, 40)]) == [(0, 2), (4, 10), (20, 25)]


def test_one_trip_is_one_two_view_clip_once_the_watermark_passes_it():
    trip = [seg("road", 100, 110), seg("driver", 100.3, 108), seg("road", 110, 120), seg("driver", 108, 120.3)]
    plans, _, _ = feed(trip)
    assert plans == []  # the slower camera's stream time is 108: nothing is 10 s + tolerance behind it yet
    plans, _, _ = feed(trip, flush=True)
    assert spans(plans) == [(100.3, 120, BOTH)]
    assert plans[0].clip_id == clip_id_for("v", 100.3, 120)
    assert {s.segment_id for s in plans[0].segments} == {"road-100-0", "driver-100.3-0", "road-110-0", "driver-108-0"}


def test_a_later_trip_moves_the_watermark_past_the_earlier_one():
    plans, state, _ = feed([seg("road", 0, 20), seg("driver", 0, 20), seg("road", 60, 70), seg("driver", 60, 70)])
    assert spans(plans) == [(0, 20, BOTH)]
    assert state.emitted_until == 20


def test_long_stretches_are_cut_into_consecutive_maximum_clips_plus_the_remainder():
    segments = [seg(c, t, t + 10) for t in range(0, 150, 10) for c in ("road", "driver")]
    plans, _, _ = feed(segments)
    assert spans(plans) == [(0, 64, BOTH), (64, 128, BOTH)]  # while the drive goes on: 128 + 1 + 10 <= 140
    plans, _, _ = feed(segments, flush=True)
    assert spans(plans) == [(0, 64, BOTH), (64, 128, BOTH), (128, 150, BOTH)]


def test_a_view_without_its_partner_makes_a_flagged_single_view_clip_or_none():
    segments = [seg("road", 0, 10), seg("driver", 0, 10), seg("road", 10, 30)]
    plans, _, _ = feed(segments, flush=True)
    assert spans(plans) == [(0, 10, BOTH), (10, 30, (View.ROAD,))]
    off = JoinRules(64, 2, 1.0, 10.0, single_view=False)
    plans, _, _ = feed(segments, rules=off, flush=True)
    assert spans(plans) == [(0, 10, BOTH)]


def test_one_camera_read_far_ahead_of_the_other_does_not_make_the_other_late():
    """Kafka gives no order across the two topics: a consumer may read a minute of road before any driver."""
    road = [seg("road", t, t + 10) for t in range(0, 100, 10)]
    driver = [seg("driver", t, t + 10) for t in range(0, 100, 10)]
    plans, _, admissions = feed(road + driver, flush=True)
    assert Admission.LATE not in admissions
    assert spans(plans) == [(a, b, v) for a, b, v in expected_clips(road + driver, RULES)] == [
        (0, 64, BOTH), (64, 100, BOTH)]


def test_a_silent_camera_stops_holding_clips_back_after_the_idle_time():
    rules = JoinRules(64, 2, 1.0, 10.0, camera_idle_s=5.0)
    state = VehicleJoinState(fleet_id="f", vehicle_id="v")
    plans = []
    for k, t in enumerate(range(0, 150, 10)):  # road only, one 10-s segment per second; ticks on the driver topic
        state = receive(state, upload(seg("road", t, t + 10)), arrived=1000.0 + k, rules=rules).state
        step = observe_tick(state, View.DRIVER, 1000.0 + k, rules)
        state, got = step.state, step.plans
        plans += got
        if k < 5:
            assert got == []  # the driver camera still has time to show up
    assert spans(plans) == [(0, 64, (View.ROAD,)), (64, 128, (View.ROAD,))]  # cut while the vehicle drives
    assert idle_cameras(state, rules) == {View.DRIVER}
    assert observe_tick(state, View.DRIVER, 1000.0 + 14 + 30, rules).plans == []
    state = observe_tick(state, View.DRIVER, 1000.0 + 14 + 30, rules).state
    step = observe_tick(state, View.ROAD, 1000.0 + 14 + 4.9, rules)  # road silent 4.9 s: not yet the end of the trip
    assert step.plans == []
    step = observe_tick(step.state, View.ROAD, 1000.0 + 14 + 5.0, rules)  # every camera idle: the trip's end is flushed
    assert spans(step.plans) == [(128, 150, (View.ROAD,))]


def test_a_replayed_backlog_sees_the_fleets_silences_not_the_joiners_outage():
    """Arrival times come from the records: a joiner that was down for minutes does not flush open trips, since
    nothing on the camera topics says the cameras were silent."""
    state = VehicleJoinState(fleet_id="f", vehicle_id="v")
    for k, t in enumerate(range(0, 40, 10)):
        for camera in ("road", "driver"):
            step = receive(state, upload(seg(camera, t, t + 10)), arrived=1000.0 + k, rules=RULES)
            state = step.state
            assert step.plans == []
    assert idle_cameras(state, RULES) == set()
    assert observe_tick(state, View.ROAD, 1000.0 + 3.5, RULES).plans == []  # sent before the last uploads: no silence


def test_one_topic_read_past_a_silence_does_not_judge_the_other_camera_by_it():
    """After a restart the joiner may read the road topic through a trip and its end before any of the driver
    topic's uploads of that trip: the driver camera was silent before the trip, not during it, so the trip is
    one two-view clip, not a road-only one with the driver's uploads refused as late."""
    state = VehicleJoinState(fleet_id="f", vehicle_id="v")
    state = receive(state, upload(seg("road", 0, 10)), arrived=1000.0, rules=RULES).state
    state = receive(state, upload(seg("driver", 0, 10)), arrived=1000.0, rules=RULES).state
    state = observe_tick(state, View.ROAD, 1030.0, RULES).state
    step = observe_tick(state, View.DRIVER, 1030.0, RULES)  # the gap between trips: the first trip is flushed
    assert spans(step.plans) == [(0, 10, BOTH)]
    state = step.state
    for k, t in enumerate((100, 110)):  # the second trip's road uploads and the tick after them, read first
        state = receive(state, upload(seg("road", t, t + 10)), arrived=1040.0 + k, rules=RULES).state
    step = observe_tick(state, View.ROAD, 1060.0, RULES)
    assert step.plans == [] and len(step.state.pending) == 2
    state, admissions, plans = step.state, [], []
    for k, t in enumerate((100, 110)):  # then the driver topic
        step = receive(state, upload(seg("driver", t, t + 10)), arrived=1040.0 + k, rules=RULES)
        state, admissions, plans = step.state, admissions + [a for _, a in step.outcomes], plans + step.plans
    step = observe_tick(state, View.DRIVER, 1060.0, RULES)
    admissions, plans = admissions + [a for _, a in step.outcomes], plans + step.plans
    assert admissions == [Admission.ACCEPTED] * 4
    assert spans(plans) == [(100, 120, BOTH)]


def test_the_timer_ticks_a_vehicle_only_while_it_waits_on_a_quiet_topic():
    state = VehicleJoinState(fleet_id="f", vehicle_id="v")
    assert not needs_tick(state, RULES, now=2000.0, quiet_s=5.0)  # nothing to wait for
    state = receive(state, upload(seg("road", 0, 10)), arrived=1000.0, rules=RULES).state
    assert needs_tick(state, RULES, now=1001.0, quiet_s=5.0)  # pending, and the driver topic never read
    state = observe_tick(state, View.DRIVER, 1001.0, RULES).state
    assert not state.pending
    assert not needs_tick(state, RULES, now=1003.0, quiet_s=5.0)  # an open stretch, but both topics fresh
    assert needs_tick(state, RULES, now=1006.0, quiet_s=5.0)


def test_too_short_pieces_make_no_clip():
    plans, _, _ = feed([seg("road", 0, 10), seg("driver", 9, 10.5)], rules=JoinRules(64, 2, 1.0, 10.0, False), flush=True)
    assert plans == []


def test_a_segment_behind_what_was_emitted_is_late_and_changes_nothing():
    plans, state, admissions = feed([seg("road", 0, 20), seg("driver", 0, 20), seg("road", 60, 70),
                                     seg("driver", 60, 70), seg("driver", 15, 25)])
    assert admissions[-1] is Admission.LATE
    assert spans(plans) == [(0, 20, BOTH)]
    assert all(s.segment_id != "driver-15-0" for s in state.segments)


def test_duplicates_change_nothing_even_after_their_clip_was_emitted():
    first = [seg("road", 0, 20), seg("driver", 0, 20), seg("road", 60, 70), seg("driver", 60, 70)]
    plans, _, admissions = feed([*first, seg("road", 0, 20), seg("driver", 60, 70)], flush=True)
    assert admissions[-2:] == [Admission.DUPLICATE, Admission.DUPLICATE]
    assert plans == feed(first, flush=True)[0]


def test_state_is_pruned_and_survives_json():
    segments = [seg(c, t, t + 10) for t in (0, 10, 100, 110) for c in ("road", "driver")]
    _, state, _ = feed(segments)
    assert all(s.end_ts > 20 - RULES.skew_tolerance_s for s in state.segments)
    assert VehicleJoinState.model_validate(state.model_dump(mode="json")) == state


# --- the oracle property ----------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(fleet_uploads())
def test_streaming_join_gives_exactly_the_oracles_clips(uploads):
    plans, _, admissions = feed(uploads, flush=True)
    assert Admission.LATE not in admissions
    assert spans(plans) == expected_clips(uploads, RULES)
    assert len({p.clip_id for p in plans}) == len(plans)


@settings(max_examples=200, deadline=None)
@given(fleet_uploads(), st.randoms(use_true_random=False))
def test_whatever_the_order_the_clips_are_the_oracles_on_what_was_accepted(uploads, rnd):
    shuffled = list(uploads)
    rnd.shuffle(shuffled)
    plans, _, admissions = feed(shuffled, flush=True)
    accepted = [s for s, a in zip(shuffled, admissions, strict=True) if a is Admission.ACCEPTED]
    assert spans(plans) == expected_clips(accepted, RULES)


@st.composite
def two_topics(draw):
    """One vehicle's uploads with arrival times, plus ticks, as the two camera topics hold them (each in arrival
    order, as a partition is): read in arrival order, and in one random interleaving as a consumer might read
    them. Events are (arrival time, camera, upload or None for a tick)."""
    uploads = draw(fleet_uploads())
    rnd = draw(st.randoms(use_true_random=False))
    topics: dict[View, list] = {View.ROAD: [], View.DRIVER: []}
    at = 1000.0
    for s in uploads:
        at += rnd.choice([0.0, 0.5, 1.0, 3.0, 8.0])
        topics[s.camera].append((at, s.camera, upload(s)))
    for camera in View:
        topics[camera] += [(rnd.uniform(1000.0, at + 20), camera, None) for _ in range(rnd.randint(0, 4))]
        topics[camera].append((at + 30, camera, None))  # the fleet's last silence: every trip ends
        topics[camera].sort(key=lambda e: e[0])
    road, driver = list(topics[View.ROAD]), list(topics[View.DRIVER])
    interleaved = []
    while road or driver:
        side = road if road and (not driver or rnd.random() < 0.5) else driver
        interleaved.append(side.pop(0))
    return sorted(interleaved, key=lambda e: e[0]), interleaved


def read(events):
    """What a joiner makes of the events in this reading order: its clips and the uploads it refused as late."""
    state = VehicleJoinState(fleet_id="f", vehicle_id="v")
    plans, outcomes = [], []
    for at, camera, message in events:
        if message is None:
            step = observe_tick(state, camera, at, RULES)
        else:
            step = receive(state, message, arrived=at, rules=RULES)
        state, plans, outcomes = step.state, plans + step.plans, outcomes + step.outcomes
    step = advance(state, RULES, flush=True)
    plans, outcomes = plans + step.plans, outcomes + step.outcomes
    return spans(plans), [m.segment_id for m, a in outcomes if a is Admission.LATE]


@settings(max_examples=300, deadline=None)
@given(two_topics())
def test_however_the_two_topics_are_interleaved_the_clips_are_those_of_arrival_order(topics):
    in_arrival_order, interleaved = topics
    assert read(interleaved) == read(in_arrival_order)
