"""The simulator: deterministic from the seed, ground truth consistent with the taxonomy, cues visible, real video."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import cv2
import numpy as np

from schemas.messages import DetectedEvent
from schemas.prompts import parse_turn1
from schemas.taxonomy import EventType, View, reference_instruction, view_of
from streams.simulate import SIMULATED_EVENTS, make_scenarios, render_driver, render_road, write_segments


def test_same_seed_same_trips_and_pixels() -> None:
    a, b = make_scenarios(5, 6), make_scenarios(5, 6)
    assert a == b
    assert np.array_equal(render_road(a[3], 4.5), render_road(b[3], 4.5))
    assert np.array_equal(render_driver(a[3], 4.5), render_driver(b[3], 4.5))
    assert [s.events for s in make_scenarios(6, 6)] != [s.events for s in a]


def test_ground_truth_follows_the_taxonomy() -> None:
    scenarios = make_scenarios(1, 300, vehicles=5)
    seen = {e.type for s in scenarios for e in s.events}
    assert seen == set(SIMULATED_EVENTS)
    assert sum(not s.events for s in scenarios) > 20, "normal driving must be represented too"
    for s in scenarios:
        for e in s.events:
            assert e.view is view_of(e.type) and 0 <= e.start < e.end <= s.duration
        assert parse_turn1(s.truth_turn1).events == list(s.events)
        assert s.instruction == reference_instruction([e.type for e in s.events])
    by_vehicle: dict[str, list[float]] = {}
    for s in scenarios:
        by_vehicle.setdefault(s.vehicle_id, []).append(s.start_ts)
    for starts in by_vehicle.values():
        assert all(b - a > scenarios[0].duration for a, b in itertools.pairwise(starts)), (
            "trips must not overlap"
        )


def _with(event: EventType | None):
    base = dataclasses.replace(make_scenarios(2, 1)[0], events=())
    if event is None:
        return base
    return dataclasses.replace(
        base, events=(DetectedEvent(type=event, view=view_of(event), start=2, end=10),)
    )


def test_each_event_changes_only_its_own_camera_and_only_while_it_lasts() -> None:
    normal = _with(None)
    for event in SIMULATED_EVENTS:
        s = _with(event)
        own, other = (
            (render_road, render_driver) if view_of(event) is View.ROAD else (render_driver, render_road)
        )
        during = np.abs(own(s, 6.0).astype(int) - own(normal, 6.0).astype(int)).mean(axis=2)
        assert (during > 40).mean() > 0.01, f"{event} is not visible"
        assert np.array_equal(other(s, 6.0), other(normal, 6.0)), f"{event} leaks into the other camera"
        if event is not EventType.NO_SEATBELT:
            assert np.array_equal(own(s, 15.0), own(normal, 15.0)), f"{event} shows after it ended"


def test_segments_are_real_decodable_video_with_device_timestamps(tmp_path: Path) -> None:
    s = make_scenarios(3, 1, duration=12.0)[0]
    segs = write_segments(s, tmp_path, segment_s=5.0, driver_clock_skew_s=0.25)
    road = [g for g in segs if g.camera is View.ROAD]
    driver = [g for g in segs if g.camera is View.DRIVER]
    assert len(road) == len(driver) == 3
    assert road[0].start_ts == s.start_ts and driver[0].start_ts == s.start_ts + 0.25
    assert road[-1].end_ts == s.start_ts + 12.0
    for a, b in itertools.pairwise(road):
        assert a.end_ts == b.start_ts
    assert len({g.segment_id for g in segs}) == len(segs)
    for g in segs:
        cap = cv2.VideoCapture(str(g.path))
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (g.height, g.width, 3)
            n += 1
        cap.release()
        assert n == round((g.end_ts - g.start_ts) * g.fps)
