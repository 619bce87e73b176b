"""Harsh driving from telemetry alone: the g-force rules fleets already run beside their cameras (issue 19, item 3),
as a baseline for the model and a guard on it. Pure functions over a segment's `TelemetrySample`s; where the
vehicle felt it, not where the video shows it.

Thresholds come from published fleet practice, per vehicle class (g = 9.80665 m/s^2):

- `passenger` (up to 6,000 lb) and `light_duty` (6,001-10,000 lb): GPS Insight's recommended defaults by weight
  class, "Defining Thresholds for Your Fleet" (help.gpsinsight.com/best-practice/defining-thresholds-for-your-fleet):
  rapid acceleration 0.37 / 0.35 g, harsh braking 0.38 / 0.36 g, hard turning 0.38 / 0.35 g;
- `sensitive`: the "industry-standard" passenger values of CalAmp-type devices as PosiTrace documents them
  (kb.positrace.com/harsh-behavior-detection): acceleration 0.20 g, deceleration 0.25 g, harsh turn 0.30 g, for a
  fleet that coaches early;
- no event below 15 km/h: the same devices' guidance against spurious events pulling out of junctions
  (10-20 km/h recommended);
- speeding: over the posted limit by more than 10 km/h for at least 10 s, only where the limit is known: a sample's
  own `speed_limit_kmh` (the device's map), else the limit the caller passes for the whole stretch.

The rules report in the model's taxonomy (`RULE_TYPES`), so the two can be compared event by event (`matched`: same
type, times overlapping within MATCH_TOLERANCE_S); `judged` says which of those types the samples could show at all.

Longitudinal acceleration is the device's `accel_ms2` where it reports one, else the change of speed between
consecutive samples; lateral acceleration is speed times yaw rate (a = v * omega), as a device without a lateral
axis estimates it. A missing or NaN reading is a dropout: skipped, never read as zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas.messages import TelemetrySample
from schemas.taxonomy import EventType

G = 9.80665  # m/s^2
MIN_SPEED_KMH = 15.0
MERGE_GAP_S = 1.0  # samples over a threshold this close together are one event
# A model's event and a rule's agree when their types are equal and their times overlap, or miss by at most this: the
# model reads 2-FPS frames and reports whole seconds, a device samples at 1-10 Hz.
MATCH_TOLERANCE_S = 2.0
RULE_TYPES = (EventType.HARSH_BRAKING, EventType.HARSH_ACCELERATION, EventType.HARSH_TURN, EventType.SPEEDING)


@dataclass(frozen=True)
class MotionThresholds:
    accel_g: float
    brake_g: float
    turn_g: float
    min_speed_kmh: float = MIN_SPEED_KMH
    speeding_over_kmh: float = 10.0
    speeding_min_s: float = 10.0


THRESHOLDS = {
    "passenger": MotionThresholds(accel_g=0.37, brake_g=0.38, turn_g=0.38),
    "light_duty": MotionThresholds(accel_g=0.35, brake_g=0.36, turn_g=0.35),
    "sensitive": MotionThresholds(accel_g=0.20, brake_g=0.25, turn_g=0.30),
}
DEFAULT_CLASS = "passenger"


@dataclass(frozen=True)
class RuleEvent:
    """One event the rules found: its type, when (the samples' time base), and its peak (g, or km/h over)."""

    type: EventType
    start: float
    end: float
    peak: float


@dataclass(frozen=True)
class Motion:
    """One instant's motion, from one sample (and the one before it, for a derived acceleration)."""

    t: float
    speed_kmh: float
    longitudinal_g: float | None
    lateral_g: float | None
    speed_limit_kmh: float | None = None  # the posted limit the sample carries


def _reading(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def motion(samples: Sequence[TelemetrySample]) -> list[Motion]:
    """The samples in time order as speed and accelerations in g; samples without a speed are dropped."""
    ordered = sorted((s for s in samples if _reading(s.speed_kmh) is not None), key=lambda s: s.t)
    out: list[Motion] = []
    for i, s in enumerate(ordered):
        speed = float(s.speed_kmh)  # type: ignore[arg-type]  # filtered above
        accel = _reading(s.accel_ms2)
        if accel is None and i > 0 and s.t > ordered[i - 1].t:
            before = ordered[i - 1]
            accel = (speed - float(before.speed_kmh)) / 3.6 / (s.t - before.t)  # type: ignore[arg-type]
        yaw = _reading(s.yaw_rate_dps)
        lateral = speed / 3.6 * math.radians(yaw) if yaw is not None else None
        out.append(
            Motion(
                t=s.t,
                speed_kmh=speed,
                longitudinal_g=None if accel is None else accel / G,
                lateral_g=None if lateral is None else lateral / G,
                speed_limit_kmh=_reading(s.speed_limit_kmh),
            )
        )
    return out


def _runs(hits: Iterable[tuple[float, float]], gap_s: float) -> list[tuple[float, float, float]]:
    """(time, value) hits in time order as (start, end, peak) runs, hits within `gap_s` joined."""
    runs: list[tuple[float, float, float]] = []
    for t, value in hits:
        if runs and t - runs[-1][1] <= gap_s:
            start, _, peak = runs[-1]
            runs[-1] = (start, t, max(peak, value))
        else:
            runs.append((t, t, value))
    return runs


def detect(
    samples: Sequence[TelemetrySample],
    thresholds: MotionThresholds = THRESHOLDS[DEFAULT_CLASS],
    *,
    speed_limit_kmh: float | None = None,
) -> list[RuleEvent]:
    """Harsh braking, acceleration and turning, and speeding where the limit is known (each sample's own limit, else
    `speed_limit_kmh`), in time order."""
    moving = [m for m in motion(samples) if m.speed_kmh >= thresholds.min_speed_kmh]
    found: list[RuleEvent] = []
    checks = (
        (
            EventType.HARSH_BRAKING,
            thresholds.brake_g,
            lambda m: None if m.longitudinal_g is None else -m.longitudinal_g,
        ),
        (EventType.HARSH_ACCELERATION, thresholds.accel_g, lambda m: m.longitudinal_g),
        (
            EventType.HARSH_TURN,
            thresholds.turn_g,
            lambda m: None if m.lateral_g is None else abs(m.lateral_g),
        ),
    )
    for event_type, limit, value_of in checks:
        hits = [(m.t, v) for m in moving if (v := value_of(m)) is not None and v >= limit]
        found += [RuleEvent(event_type, s, e, round(p, 3)) for s, e, p in _runs(hits, MERGE_GAP_S)]
    over = [(m.t, m.speed_kmh - posted) for m in moving if (posted := _limit(m, speed_limit_kmh)) is not None]
    hits = [(t, v) for t, v in over if v > thresholds.speeding_over_kmh]
    found += [
        RuleEvent(EventType.SPEEDING, s, e, round(p, 1))
        for s, e, p in _runs(hits, MERGE_GAP_S)
        if e - s >= thresholds.speeding_min_s
    ]
    return sorted(found, key=lambda e: (e.start, e.type.value))


def _limit(m: Motion, default: float | None) -> float | None:
    return m.speed_limit_kmh if m.speed_limit_kmh is not None else _reading(default)


def judged(
    samples: Sequence[TelemetrySample], *, speed_limit_kmh: float | None = None
) -> frozenset[EventType]:
    """The rule types these samples could show at all: braking and acceleration where a longitudinal acceleration
    can be read (the device's axis, or two speeds), turning where a yaw rate can, speeding where a limit is known.
    Where a type is not judged, the rules' silence says nothing: a model's event of that type is not a disagreement."""
    found: set[EventType] = set()
    for m in motion(samples):
        if m.longitudinal_g is not None:
            found |= {EventType.HARSH_BRAKING, EventType.HARSH_ACCELERATION}
        if m.lateral_g is not None:
            found.add(EventType.HARSH_TURN)
        if _limit(m, speed_limit_kmh) is not None:
            found.add(EventType.SPEEDING)
    return frozenset(found)


class Span(Protocol):
    """An event as both sides give it: a type and clip-relative times (a RuleEvent, a DetectedEvent)."""

    @property
    def type(self) -> EventType: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


def matched(
    these: Sequence[Span], others: Sequence[Span], *, tolerance_s: float = MATCH_TOLERANCE_S
) -> list[bool]:
    """For each of `these`, whether one of `others` agrees with it: the same type, and times that overlap or miss
    by at most `tolerance_s`. Call it both ways to split two sides into agreed, only-these and only-others."""
    return [
        any(
            o.type == e.type and o.start <= e.end + tolerance_s and e.start <= o.end + tolerance_s
            for o in others
        )
        for e in these
    ]


__all__ = [
    "DEFAULT_CLASS",
    "MATCH_TOLERANCE_S",
    "RULE_TYPES",
    "THRESHOLDS",
    "Motion",
    "MotionThresholds",
    "RuleEvent",
    "Span",
    "detect",
    "judged",
    "matched",
    "motion",
]
