"""The simulator's telemetry: 1 Hz samples on each segment, deterministic, covering the trip once per camera, true
to what the vehicle did (issue 19, item 4)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from schemas.distance import distance_km
from schemas.motion_rules import detect
from schemas.taxonomy import EventType, View
from streams.simulate import (
    HARSH_TURN_G,
    accel_ms2,
    make_scenarios,
    speed_kmh,
    telemetry,
    write_segments,
    yaw_rate_dps,
)


def test_segments_carry_1hz_speeds_that_add_up_to_the_trip(tmp_path: Path) -> None:
    s = make_scenarios(3, 1, duration=12.0)[0]
    segs = write_segments(s, tmp_path, segment_s=5.0, road_size=(64, 36), driver_size=(32, 24))
    whole = distance_km(telemetry(s, 0.0, 12.0))
    assert whole is not None and 40 * 12 / 3600 <= whole <= 80 * 12 / 3600
    for camera in View:
        mine = [g for g in segs if g.camera is camera]
        for g in mine:
            assert g.telemetry[0].t == g.start_ts and g.telemetry[-1].t == pytest.approx(g.end_ts)
            assert all(b.t - a.t <= 1.0 + 1e-9 for a, b in itertools.pairwise(g.telemetry))
        assert sum(distance_km(g.telemetry) or 0.0 for g in mine) == pytest.approx(
            whole
        )  # same on both cameras
    again = write_segments(s, tmp_path / "again", segment_s=5.0, road_size=(64, 36), driver_size=(32, 24))
    assert [g.telemetry for g in again] == [g.telemetry for g in segs]


def test_speed_follows_the_scenario() -> None:
    slowing = (EventType.ROLLING_STOP, EventType.FORWARD_COLLISION_RISK)
    for s in make_scenarios(7, 40):
        cruise = 50.0 * s.look.speed
        assert 40.0 <= cruise <= 80.0
        for e in s.events:
            t = (e.start + e.end) / 2
            if e.type is EventType.ROLLING_STOP:
                assert speed_kmh(s, t) == pytest.approx(8.0)  # slows to a roll, does not stop
            elif e.type is EventType.FORWARD_COLLISION_RISK:
                assert speed_kmh(s, t) < cruise
                assert speed_kmh(s, e.start - 0.1) == cruise  # the brake comes late: at the event
            elif not any(o.type in slowing for o in s.events):
                assert speed_kmh(s, t) == cruise


def test_the_telemetry_tells_what_the_vehicle_did() -> None:
    """Issue 19, item 4: the telemetry rules (schemas/motion_rules.py) find a harsh turn in every harsh turn and a
    harsh brake at every forward collision risk; a rolling stop is gentle and never a stop; a trip without such an
    event triggers no rule at all; readings carry noise and some drop out."""
    seen: set[EventType] = set()
    dropouts = samples = 0
    for s in make_scenarios(19, 60, duration=12.0):
        tel = telemetry(s, -10.0, s.duration + 10.0)  # with the approach and the pulling away around the trip
        samples += len(tel)
        dropouts += sum(x.accel_ms2 is None for x in tel)
        found = {e.type: e for e in detect(tel)}
        kinds = {e.type for e in s.events}
        if EventType.HARSH_TURN in kinds:
            turn = next(e for e in s.events if e.type is EventType.HARSH_TURN)
            assert EventType.HARSH_TURN in found, s.scenario_id
            rule = found[EventType.HARSH_TURN]
            assert turn.start <= rule.start - s.start_ts and rule.end - s.start_ts <= turn.end
            assert 0.45 <= rule.peak <= 0.55
        if EventType.FORWARD_COLLISION_RISK in kinds:
            risk = next(e for e in s.events if e.type is EventType.FORWARD_COLLISION_RISK)
            assert EventType.HARSH_BRAKING in found, s.scenario_id
            assert abs(found[EventType.HARSH_BRAKING].start - s.start_ts - risk.start) <= 1.0
        if EventType.ROLLING_STOP in kinds:
            assert min(x.speed_kmh or 99.0 for x in tel) > 0.0  # never a full stop
        expected = {
            EventType.HARSH_TURN: {EventType.HARSH_TURN},
            EventType.FORWARD_COLLISION_RISK: {EventType.HARSH_BRAKING},
        }
        allowed = set().union(*(expected.get(k, set()) for k in kinds))
        assert set(found) <= allowed, (s.scenario_id, kinds, found)
        seen |= kinds
    assert {EventType.HARSH_TURN, EventType.FORWARD_COLLISION_RISK, EventType.ROLLING_STOP} <= seen
    assert 0.01 <= dropouts / samples <= 0.06


def test_the_yaw_rate_is_the_turns_lateral_acceleration() -> None:
    s = next(s for s in make_scenarios(19, 60) if any(e.type is EventType.HARSH_TURN for e in s.events))
    turn = next(e for e in s.events if e.type is EventType.HARSH_TURN)
    middle = (turn.start + turn.end) / 2
    lateral = speed_kmh(s, middle) / 3.6 * math.radians(abs(yaw_rate_dps(s, middle)))
    assert lateral == pytest.approx(HARSH_TURN_G * 9.80665)
    assert yaw_rate_dps(s, turn.end + 0.5) == 0.0 and accel_ms2(s, middle) == 0.0
