"""A clip's telemetry as one line of text for the model: what prompt `cot-v2` adds to turn 1 (issue 19, item 2).

`summarize(samples)` reads the samples through `schemas.motion_rules.motion` (speed, longitudinal g from the
device's axis or from two speeds, lateral g = speed x yaw rate; a missing or NaN reading is a dropout, skipped,
never zero) and writes, with t in seconds from the clip start:

    Vehicle motion 0-12 s: speed start 52 km/h, min 26, max 53, end 40; braking 0.50 g at 3 s;
    acceleration 0.15 g at 6 s; lateral 0.49 g at 9 s; yaw rate 35 deg/s; speed limit 50 km/h, 3 km/h over at 1 s.

(one line; wrapped here). Clause by clause, always in this order, so that every clip's summary has one shape:

- `Vehicle motion A-B s:` the first and last sample with a speed;
- `speed start S km/h, min M, max X, end E`: whole km/h;
- `braking G g at T s` / `acceleration G g at T s`: the hardest slowing down and speeding up (longitudinal g,
  2 decimals, 0.01 g apart, so a 0.37 g and a 0.38 g peak read apart, as the harsh thresholds of
  `schemas.motion_rules.THRESHOLDS` do), at its time in whole seconds; `braking under 0.05 g` below
  `G_FLOOR`, `braking unknown` where no longitudinal acceleration can be read;
- `lateral G g at T s`: the hardest cornering, |speed x yaw rate|, likewise (`lateral under 0.05 g`,
  `lateral unknown` without a yaw rate);
- `yaw rate Y deg/s`: the largest |yaw rate| in whole deg/s (`yaw rate under 2 deg/s` below `YAW_FLOOR_DPS`,
  `yaw rate unknown`);
- `speed limit L km/h, K km/h over at T s`: the worst excess over the posted limit where samples carry one
  (`speed_limit_kmh`), L the limit at that moment; `speed limit L km/h, never more than 2 km/h over` below
  `OVER_FLOOR_KMH`; `speed limit unknown` where no sample carries a limit.

Without a single sample with a speed the summary is `NO_TELEMETRY`, "Vehicle motion: no telemetry.".

Sensor noise should not change the text needlessly: speeds are whole km/h, accelerations 0.01 g, and the floors turn
the noise of steady driving (a few hundredths of a g, a degree per second, a km/h about the limit) into one fixed
text; where two samples tie at the printed precision the earlier one's time is given. The text is pure and
deterministic: the same samples always give the same bytes, whatever engine or training job renders it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

from schemas.messages import TelemetrySample
from schemas.motion_rules import Motion, motion

NO_TELEMETRY: Final = "Vehicle motion: no telemetry."
G_FLOOR: Final = 0.05  # g: below it a peak is "under 0.05 g" (steady driving and sensor noise)
YAW_FLOOR_DPS: Final = 2.0  # deg/s: below it "under 2 deg/s" (straight road, gyro noise)
OVER_FLOOR_KMH: Final = 2.5  # km/h over the limit that round to 2 or less: "never more than 2 km/h over"

_READINGS: Final = ("speed_kmh", "accel_ms2", "yaw_rate_dps", "lat", "lon", "speed_limit_kmh")


def _finite(samples: Sequence[TelemetrySample]) -> list[TelemetrySample]:
    """Samples with a finite time, each reading that is not a finite number as missing (NaN and inf alike)."""
    out = []
    for s in samples:
        if not math.isfinite(s.t):
            continue
        bad = {k: None for k in _READINGS if (v := getattr(s, k)) is not None and not math.isfinite(v)}
        out.append(s.model_copy(update=bad) if bad else s)
    return out


def _s(t: float) -> int:
    return int(round(t))


def _peak(
    moments: list[Motion], value: Callable[[Motion], float | None], digits: int
) -> tuple[float, float] | None:
    """(value rounded to `digits`, time) of the largest value; the earliest of those equal when rounded. None: no
    moment has the value."""
    best: tuple[float, float] | None = None
    for m in moments:
        v = value(m)
        if v is None:
            continue
        shown = round(v, digits)
        if best is None or shown > best[0]:
            best = (shown, m.t)
    return best


def _g_clause(name: str, peak: tuple[float, float] | None) -> str:
    if peak is None:
        return f"{name} unknown"
    g, t = peak
    if g < G_FLOOR:
        return f"{name} under {G_FLOOR:.2f} g"
    return f"{name} {g:.2f} g at {_s(t)} s"


def _yaw_clause(samples: Sequence[TelemetrySample]) -> str:
    rates = [abs(s.yaw_rate_dps) for s in samples if s.yaw_rate_dps is not None and s.speed_kmh is not None]
    if not rates:
        return "yaw rate unknown"
    peak = max(rates)
    if peak < YAW_FLOOR_DPS:
        return f"yaw rate under {YAW_FLOOR_DPS:.0f} deg/s"
    return f"yaw rate {round(peak)} deg/s"


def _limit_clause(moments: list[Motion]) -> str:
    worst: tuple[int, float, float] | None = None  # (excess in whole km/h, time, limit)
    for m in moments:
        if m.speed_limit_kmh is None:
            continue
        excess = round(m.speed_kmh - m.speed_limit_kmh)
        if worst is None or excess > worst[0]:
            worst = (excess, m.t, m.speed_limit_kmh)
    if worst is None:
        return "speed limit unknown"
    excess, t, limit = worst
    head = f"speed limit {round(limit)} km/h"
    if excess < OVER_FLOOR_KMH:
        return f"{head}, never more than {math.floor(OVER_FLOOR_KMH)} km/h over"
    return f"{head}, {excess} km/h over at {_s(t)} s"


def summarize(samples: Sequence[TelemetrySample]) -> str:
    """The clip's motion as one line (the module's docstring gives the format); `NO_TELEMETRY` without a speed."""
    clean = _finite(samples)
    moments = motion(clean)
    if not moments:
        return NO_TELEMETRY
    speeds = [m.speed_kmh for m in moments]
    first, last = moments[0], moments[-1]
    clauses = [
        f"speed start {round(first.speed_kmh)} km/h, min {round(min(speeds))}, max {round(max(speeds))}, "
        f"end {round(last.speed_kmh)}",
        _g_clause(
            "braking", _peak(moments, lambda m: None if m.longitudinal_g is None else -m.longitudinal_g, 2)
        ),
        _g_clause("acceleration", _peak(moments, lambda m: m.longitudinal_g, 2)),
        _g_clause("lateral", _peak(moments, lambda m: None if m.lateral_g is None else abs(m.lateral_g), 2)),
        _yaw_clause(clean),
        _limit_clause(moments),
    ]
    return f"Vehicle motion {_s(first.t)}-{_s(last.t)} s: " + "; ".join(clauses) + "."


__all__ = ["G_FLOOR", "NO_TELEMETRY", "OVER_FLOOR_KMH", "YAW_FLOOR_DPS", "summarize"]
