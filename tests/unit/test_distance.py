"""A segment's distance from its telemetry: the GPS path, else speed over time, else unknown; and how it travels
from the segment message to the join's SegmentRef."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.distance import distance_km, haversine_km
from schemas.messages import SegmentMessage, SegmentRef, TelemetrySample

ONE_DEGREE_KM = 111.19508  # 6371.0088 km * pi / 180: one degree of a great circle


def sample(
    t: float, speed: float | None = None, lat: float | None = None, lon: float | None = None
) -> TelemetrySample:
    return TelemetrySample(t=t, speed_kmh=speed, lat=lat, lon=lon)


def test_haversine_of_known_arcs() -> None:
    assert haversine_km(0, 0, 0, 1) == pytest.approx(ONE_DEGREE_KM, abs=1e-5)  # along the equator
    assert haversine_km(10, 5, 11, 5) == pytest.approx(ONE_DEGREE_KM, abs=1e-5)  # along a meridian
    assert haversine_km(60, 0, 60, 1) == pytest.approx(ONE_DEGREE_KM / 2, abs=1e-3)  # cos 60 deg
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)  # antipodes: no domain error
    assert haversine_km(48.1, 11.5, 48.1, 11.5) == 0.0


def test_gps_path_is_summed_in_time_order() -> None:
    path = [
        sample(0, lat=0, lon=0),
        sample(1, lat=0, lon=0.5),
        sample(2, lat=0, lon=1),
        sample(3, lat=1, lon=1),
    ]
    assert distance_km(path) == pytest.approx(2 * ONE_DEGREE_KM, abs=1e-4)
    assert distance_km(list(reversed(path))) == distance_km(path)  # unsorted t
    assert distance_km([path[2], path[0], path[3], path[1]]) == distance_km(path)


def test_gps_wins_over_speed_when_there_are_two_fixes() -> None:
    samples = [sample(0, 50, 0, 0), sample(3600, 50, 0, 1)]
    assert distance_km(samples) == pytest.approx(ONE_DEGREE_KM, abs=1e-5)


def test_a_gps_jump_is_simply_summed() -> None:
    jump = [sample(0, lat=0, lon=0), sample(1, lat=0, lon=1), sample(2, lat=0, lon=0)]
    assert distance_km(jump) == pytest.approx(2 * ONE_DEGREE_KM, abs=1e-4)


def test_speed_profile_integrates_by_trapezoids() -> None:
    ramp_then_cruise = [
        sample(t, speed=min(3.6 * t, 36.0)) for t in range(21)
    ]  # 0 -> 36 km/h in 10 s, then 10 s
    assert distance_km(ramp_then_cruise) == pytest.approx((0.5 * 10 * 36 + 10 * 36) / 3600)  # 0.15 km
    assert distance_km([sample(0, 72), sample(5, 72)]) == pytest.approx(0.1)  # 20 m/s for 5 s
    uneven = [sample(100.0, 36), sample(100.5, 36), sample(103.0, 36)]
    assert distance_km(uneven) == pytest.approx(0.03)
    assert distance_km(list(reversed(ramp_then_cruise))) == pytest.approx(0.15)  # unsorted t


def test_samples_missing_values_are_skipped() -> None:
    one_fix = [sample(0, 36, 0, 0), sample(10, 36), sample(20, 36, lat=5)]  # one usable fix: speed decides
    assert distance_km(one_fix) == pytest.approx(0.2)
    gaps = [sample(0, 36), sample(5), sample(10, math.nan), sample(20, 36), sample(math.inf, 36)]
    assert distance_km(gaps) == pytest.approx(0.2)
    fixes = [
        sample(0, lat=0, lon=0),
        sample(1, lat=0),
        sample(2, lat=math.nan, lon=3),
        sample(3, lat=0, lon=1),
    ]
    assert distance_km(fixes) == pytest.approx(ONE_DEGREE_KM, abs=1e-5)


@pytest.mark.parametrize(
    "samples",
    [
        [],
        [sample(0, 50, 48.1, 11.5)],  # one sample
        [sample(0, lat=48.1, lon=11.5), sample(1)],  # one fix, no speed
        [sample(0, 50), sample(1, lat=48.1)],  # one speed, one half fix
        [sample(0), sample(1)],  # nothing measured
    ],
)
def test_unknown_without_two_usable_samples(samples: list[TelemetrySample]) -> None:
    assert distance_km(samples) is None


def test_standing_still_is_zero_and_negative_speeds_count_as_zero() -> None:
    assert distance_km([sample(0, 0), sample(60, 0)]) == 0.0
    assert distance_km([sample(0, lat=1, lon=1), sample(60, lat=1, lon=1)]) == 0.0
    assert distance_km([sample(0, -36), sample(10, -36)]) == 0.0
    assert distance_km([sample(0, -36), sample(10, 36)]) == pytest.approx(0.05)  # (0 + 36) / 2 km/h for 10 s


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    st.lists(
        st.builds(
            TelemetrySample,
            t=st.floats(-1e6, 1e6),
            speed_kmh=st.none() | finite,
            lat=st.none() | st.floats(-90, 90),
            lon=st.none() | st.floats(-180, 180),
        )
    )
)
def test_never_negative(samples: list[TelemetrySample]) -> None:
    km = distance_km(samples)
    assert km is None or km >= 0


def _message(telemetry: list[TelemetrySample]) -> SegmentMessage:
    return SegmentMessage(
        fleet_id="f",
        vehicle_id="v",
        camera="road",
        segment_id="s",
        start_ts=0,
        end_ts=10,
        fps=10,
        width=64,
        height=36,
        codec="mpeg4",
        video_uri="file:///s.mp4",
        telemetry=telemetry,
    )


def test_the_ref_carries_the_distance_and_old_refs_still_load() -> None:
    assert _message([sample(0, 72), sample(5, 72)]).ref("file:///b").distance_km == pytest.approx(0.1)
    assert _message([]).ref("file:///b").distance_km is None
    stored = '{"segment_id": "s", "camera": "road", "start_ts": 0, "end_ts": 10, "video_uri": "file:///b"}'
    assert SegmentRef.model_validate_json(stored).distance_km is None  # join state written before distances


def test_clip_distance_counts_one_camera_by_overlap() -> None:
    from schemas.distance import clip_distance_km
    from schemas.messages import SegmentRef

    def seg(camera: str, start: float, end: float, km: float | None) -> SegmentRef:
        return SegmentRef(
            segment_id=f"{camera}{start}",
            camera=camera,
            start_ts=start,
            end_ts=end,
            video_uri="f",
            distance_km=km,
        )

    road = [seg("road", 0, 10, 1.0), seg("road", 10, 20, 2.0)]
    driver = [seg("driver", 0, 20, 5.0)]
    assert clip_distance_km(0, 20, road + driver) == 3.0  # road first; the driver's copy is not added
    assert clip_distance_km(5, 15, road) == 1.5  # half of each segment lies in the clip
    assert clip_distance_km(0, 20, [seg("road", 0, 10, None), *driver]) == 5.0  # road incomplete: driver's
    assert clip_distance_km(0, 20, [seg("road", 0, 10, None)]) is None
    assert clip_distance_km(0, 20, []) is None
