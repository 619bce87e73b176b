"""The driver safety score: the formula and its default weights, in one place (README "Driver safety score").

Per driver and week (ISO weeks, Monday first, UTC):

1. **Counted events**: the events a manager reviewed and kept, i.e. coaching status `needs_coaching` or `coached`.
   Unreviewed events (`needs_review`) do not count yet; dismissed ones never do.
2. **Points**: each counted event adds its type's weight. The default weight is the type's severity in the taxonomy
   (1 minor .. 3 critical); a fleet may set its own weight per type (`fleet_score_settings.weights`).
3. **Rate**: points per 100 km driven that week when the distance of every clip of the week is known, else points
   per driving hour. A week with little driving counts as at least 50 km (or 1 hour): one event in a ten-minute
   week would otherwise sink the score to 0 on almost no evidence.
4. **Score** = max(0, 100 - penalty x rate), rounded to a whole number: a week with driving and no counted event
   scores 100. The penalty is per 100 km (default 10) or per driving hour (default 20, the same at 50 km/h); a
   fleet may set both. A week without driving has no score.

So with the defaults, one reviewed phone call (weight 3) in 150 km costs 100 - 10 x 3 / 1.5 = 80.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from schemas.taxonomy import TAXONOMY, EventType

COUNTED_STATUSES = ("needs_coaching", "coached")
DEFAULT_PENALTY_PER_100KM = 10.0
DEFAULT_PENALTY_PER_HOUR = 20.0
MIN_KM = 50.0  # the least driving a week's rate is counted over
MIN_HOURS = 1.0


def default_weights() -> dict[str, float]:
    return {t.value: float(TAXONOMY[t].severity) for t in EventType}


@dataclass(frozen=True)
class ScoreSettings:
    """A fleet's weights and penalties (the defaults where it set none)."""

    weights: dict[str, float] = field(default_factory=default_weights)
    penalty_per_100km: float = DEFAULT_PENALTY_PER_100KM
    penalty_per_hour: float = DEFAULT_PENALTY_PER_HOUR

    @classmethod
    def with_overrides(
        cls,
        weights: dict[str, float] | None = None,
        penalty_per_100km: float | None = None,
        penalty_per_hour: float | None = None,
    ) -> ScoreSettings:
        return cls(
            {**default_weights(), **(weights or {})},
            DEFAULT_PENALTY_PER_100KM if penalty_per_100km is None else penalty_per_100km,
            DEFAULT_PENALTY_PER_HOUR if penalty_per_hour is None else penalty_per_hour,
        )


def parse_weights(items: list[str]) -> dict[str, float]:
    """`TYPE=WEIGHT` items (a command line's) as weights; a ValueError names the first bad one."""
    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in {t.value for t in EventType}:
            raise ValueError(
                f"{item!r}: {name!r} is not an event type ({', '.join(t.value for t in EventType)})"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: the weight must be a number, as in phone_use=4") from None
        if not 0 <= weight < 1000:  # also refuses nan and inf
            raise ValueError(f"{item!r}: a weight is from 0 up to 1000")
        weights[name] = weight
    return weights


@dataclass(frozen=True)
class TypeLine:
    """One line of a score's explanation: `events` of `type`, each worth `weight`."""

    type: str
    events: int
    weight: float

    @property
    def points(self) -> float:
        return self.events * self.weight


@dataclass(frozen=True)
class WeekScore:
    driver_id: str | None
    week: date
    score: int
    points: float
    rate: float
    per: str  # "100 km" | "hour": what the rate is counted per
    exposure: float  # what the rate divides by: hundreds of km or hours, at least MIN_KM or MIN_HOURS
    penalty: float
    km: float | None
    hours: float
    lines: tuple[TypeLine, ...]

    @property
    def formula(self) -> str:
        """The score as arithmetic a manager can check."""
        unit = "x 100 km" if self.per == "100 km" else "h"
        return f"100 - {self.penalty:g} x {self.points:g} points / {self.exposure:g} {unit} = {self.score}"

    @property
    def floored(self) -> bool:
        """Whether the week's driving was less than the least a rate is counted over."""
        driven = self.km / 100.0 if self.per == "100 km" and self.km is not None else self.hours
        return driven < self.exposure


def week_score(
    driver_id: str | None,
    week: date,
    counts: dict[str, int],
    *,
    km: float | None,
    hours: float,
    settings: ScoreSettings,
) -> WeekScore | None:
    """The score of one driver-week from its counted events per type and its driving; None without driving."""
    if hours <= 0:
        return None
    lines = tuple(
        TypeLine(t, n, settings.weights.get(t, 1.0))
        for t, n in sorted(counts.items(), key=lambda item: (-settings.weights.get(item[0], 1.0), item[0]))
        if n > 0
    )
    points = sum(line.points for line in lines)
    if km is not None and km > 0:
        per, exposure, penalty = "100 km", max(km, MIN_KM) / 100.0, settings.penalty_per_100km
    else:
        per, exposure, penalty = "hour", max(hours, MIN_HOURS), settings.penalty_per_hour
    rate = points / exposure
    score = max(0, round(100 - penalty * rate))
    return WeekScore(driver_id, week, score, points, rate, per, round(exposure, 3), penalty, km, hours, lines)


__all__ = [
    "COUNTED_STATUSES",
    "MIN_HOURS",
    "MIN_KM",
    "ScoreSettings",
    "TypeLine",
    "WeekScore",
    "default_weights",
    "parse_weights",
    "week_score",
]
