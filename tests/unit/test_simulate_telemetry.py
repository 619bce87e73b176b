"""The simulator's telemetry: 1 Hz speeds on each segment, deterministic, covering the trip once per camera."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from schemas.distance import distance_km
from schemas.taxonomy import EventType, View
from streams.simulate import make_scenarios, speed_kmh, telemetry, write_segments


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
            elif not any(o.type in slowing and o.start <= t <= o.end for o in s.events):
                assert speed_kmh(s, t) == cruise
