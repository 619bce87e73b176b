"""The telemetry rules (schemas/motion_rules.py): harsh braking, acceleration, turning and speeding from samples,
at the published thresholds; dropouts are skipped, low speed is ignored, close hits are one event."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from schemas.messages import TelemetrySample
from schemas.motion_rules import THRESHOLDS, G, detect, motion
from schemas.taxonomy import EventType


def _cruise_then(change_ms2: float, *, speed_kmh: float = 60.0, seconds: int = 3) -> list[TelemetrySample]:
    """10 Hz speed: 2 s of cruise, then `seconds` of a constant change, then cruise at the new speed."""
    samples, v = [], speed_kmh
    for i in range(0, 10 * (4 + seconds)):
        t = i / 10
        if 2.0 <= t < 2.0 + seconds:
            v += change_ms2 * 3.6 / 10
        samples.append(TelemetrySample(t=t, speed_kmh=max(0.0, v)))
    return samples


def test_braking_over_the_threshold_is_harsh_and_gentle_braking_is_not() -> None:
    harsh = detect(_cruise_then(-0.5 * G))
    assert [e.type for e in harsh] == [EventType.HARSH_BRAKING]
    assert (
        1.9 <= harsh[0].start <= 2.2
        and 4.3 <= harsh[0].end <= 4.6  # until it drops below 15 km/h
        and harsh[0].peak == pytest.approx(0.5, 0.05)
    )
    assert detect(_cruise_then(-0.2 * G)) == []


def test_the_sensitive_class_coaches_earlier() -> None:
    assert detect(_cruise_then(-0.3 * G)) == []
    assert [e.type for e in detect(_cruise_then(-0.3 * G), THRESHOLDS["sensitive"])] == [
        EventType.HARSH_BRAKING
    ]


def test_harsh_acceleration_from_the_devices_own_axis() -> None:
    samples = [
        TelemetrySample(t=t / 2, speed_kmh=40.0, accel_ms2=0.45 * G if 2 <= t < 5 else 0.0) for t in range(12)
    ]
    assert [(e.type, e.start, e.end) for e in detect(samples)] == [(EventType.HARSH_ACCELERATION, 1.0, 2.0)]


def test_a_harsh_turn_is_speed_times_yaw_rate() -> None:
    # 50 km/h at 30 deg/s: 13.9 m/s * 0.524 rad/s = 7.3 m/s^2 = 0.74 g
    samples = [
        TelemetrySample(t=float(t), speed_kmh=50.0, yaw_rate_dps=30.0 if t in (3, 4) else 2.0)
        for t in range(8)
    ]
    events = detect(samples)
    assert [(e.type, e.start, e.end) for e in events] == [(EventType.HARSH_TURN, 3.0, 4.0)]
    assert events[0].peak == pytest.approx(50 / 3.6 * math.radians(30) / G, abs=0.001)


def test_below_walking_pace_nothing_counts() -> None:
    samples = [TelemetrySample(t=float(t), speed_kmh=10.0, yaw_rate_dps=90.0) for t in range(5)]
    assert detect(samples) == []  # a tight turn out of a parking bay


def test_speeding_needs_the_limit_and_ten_seconds() -> None:
    # accel_ms2 = 0: the device's own axis, so the steps in speed are not read as harsh acceleration
    samples = [
        TelemetrySample(t=float(t), speed_kmh=65.0 if 5 <= t <= 17 else 50.0, accel_ms2=0.0)
        for t in range(25)
    ]
    assert detect(samples) == []  # no limit known
    events = detect(samples, speed_limit_kmh=50.0)
    assert [(e.type, e.start, e.end, e.peak) for e in events] == [(EventType.SPEEDING, 5.0, 17.0, 15.0)]
    short = [
        TelemetrySample(t=float(t), speed_kmh=65.0 if 5 <= t <= 9 else 50.0, accel_ms2=0.0) for t in range(25)
    ]
    assert detect(short, speed_limit_kmh=50.0) == []


def test_dropouts_are_skipped_not_read_as_zero() -> None:
    samples = [
        TelemetrySample(t=0.0, speed_kmh=60.0),
        TelemetrySample(t=1.0, speed_kmh=None),
        TelemetrySample(t=2.0, speed_kmh=float("nan"), yaw_rate_dps=float("nan")),
        TelemetrySample(t=3.0, speed_kmh=59.0),
    ]
    assert detect(samples) == []  # 60 -> 59 km/h over 3 s, not 60 -> 0
    assert [m.t for m in motion(samples)] == [0.0, 3.0]


def test_close_hits_are_one_event_and_apart_two() -> None:
    yaw = {2: 35.0, 3: 35.0, 5: 35.0, 9: 35.0}
    samples = [TelemetrySample(t=float(t), speed_kmh=50.0, yaw_rate_dps=yaw.get(t, 0.0)) for t in range(12)]
    assert [(e.start, e.end) for e in detect(samples)] == [(2.0, 3.0), (5.0, 5.0), (9.0, 9.0)]


def _cruise(
    speeds: dict[range, float], limits: dict[range, float | None], n: int = 40
) -> list[TelemetrySample]:
    """1 Hz samples at 50 km/h unless `speeds` says otherwise, each with the posted limit `limits` gives it."""

    def at(table: Mapping[range, float | None], t: int, default: float | None) -> float | None:
        return next((v for r, v in table.items() if t in r), default)

    return [
        TelemetrySample(
            t=float(t), speed_kmh=at(speeds, t, 50.0), accel_ms2=0.0, speed_limit_kmh=at(limits, t, None)
        )
        for t in range(n)
    ]


def test_speeding_against_each_samples_own_limit() -> None:
    # 70 km/h throughout; the posted limit drops from 80 to 50 at t=10 and back to 80 at t=25
    samples = _cruise({range(40): 70.0}, {range(10): 80.0, range(10, 25): 50.0, range(25, 40): 80.0})
    assert [(e.type, e.start, e.end, e.peak) for e in detect(samples)] == [
        (EventType.SPEEDING, 10.0, 24.0, 20.0)
    ]
    # the explicit limit fills in where a sample knows none, and never overrides a sample's own
    partly = _cruise({range(40): 70.0}, {range(20): 80.0})
    assert detect(partly) == []
    assert [(e.start, e.end) for e in detect(partly, speed_limit_kmh=50.0)] == [(20.0, 39.0)]
    # a limit only known for 8 s of speeding is too short, and a NaN limit is no limit
    short = _cruise({range(40): 70.0}, {range(10, 18): 50.0, range(18, 40): float("nan")})
    assert detect(short) == [] and detect(short, speed_limit_kmh=None) == []


def test_judged_says_which_rule_types_the_samples_could_show() -> None:
    from schemas.motion_rules import judged

    speed_only = [TelemetrySample(t=float(t), speed_kmh=50.0) for t in range(5)]
    assert judged(speed_only) == {EventType.HARSH_BRAKING, EventType.HARSH_ACCELERATION}
    assert EventType.SPEEDING in judged(speed_only, speed_limit_kmh=50.0)
    with_yaw = [TelemetrySample(t=0.0, speed_kmh=50.0, accel_ms2=0.1, yaw_rate_dps=1.0, speed_limit_kmh=60.0)]
    assert judged(with_yaw) == {
        EventType.HARSH_BRAKING,
        EventType.HARSH_ACCELERATION,
        EventType.HARSH_TURN,
        EventType.SPEEDING,
    }
    assert judged([TelemetrySample(t=0.0, speed_kmh=50.0)]) == frozenset()  # one speed gives no acceleration
    assert judged([]) == frozenset()


def test_matched_pairs_events_of_one_type_within_the_tolerance() -> None:
    from schemas.messages import DetectedEvent
    from schemas.motion_rules import RuleEvent, matched

    model = [
        DetectedEvent(type=EventType.HARSH_BRAKING, view="road", start=4.0, end=6.0),
        DetectedEvent(type=EventType.HARSH_TURN, view="road", start=20.0, end=22.0),
        DetectedEvent(type=EventType.PHONE_USE, view="driver", start=0.0, end=30.0),
    ]
    rules = [
        RuleEvent(EventType.HARSH_BRAKING, 7.5, 8.0, 0.5),  # 1.5 s after the model's: within 2 s
        RuleEvent(EventType.HARSH_TURN, 25.0, 26.0, 0.45),  # 3 s after: another event
        RuleEvent(EventType.HARSH_ACCELERATION, 4.0, 6.0, 0.4),  # the model's braking times, another type
    ]
    assert matched(model, rules) == [True, False, False]
    assert matched(rules, model) == [True, False, False]
    assert matched(model, rules, tolerance_s=3.0) == [True, True, False]
    assert matched([], rules) == [] and matched(model, []) == [False, False, False]
