"""Safety managers' reports over the views of migrations 0002 and 0003: events per group and period with rates per
driving hour and per 100 km, the trend against the previous period, the review queue, and the drivers' safety
scores (the formula in safety_score.py). Plain SQL over the views, so the README's example
queries and these are the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from streams.console.safety_score import COUNTED_STATUSES, ScoreSettings, WeekScore, week_score

Group = Literal["fleet", "vehicle", "driver"]
Period = Literal["day", "week"]
GROUP_COLUMN = {"fleet": "fleet_id", "vehicle": "vehicle_id", "driver": "driver_id"}


@dataclass(frozen=True)
class Filters:
    fleet: str | None = None
    vehicle: str | None = None
    driver: str | None = None
    event_type: str | None = None
    since: date | None = None  # inclusive
    until: date | None = None  # exclusive

    def where(self, *, events: bool = True, prefix: str = "") -> tuple[str, dict[str, Any]]:
        """SQL conditions on a report view and their bound parameters (named with `prefix`, to combine two)."""
        clauses: list[str] = ["TRUE"]
        params: dict[str, object] = {}
        wanted = [("fleet_id", self.fleet), ("vehicle_id", self.vehicle), ("driver_id", self.driver)]
        if events:
            wanted.append(("type", self.event_type))
        for column, value in wanted:
            if value is not None:
                clauses.append(f"{column} = :{prefix}{column}")
                params[prefix + column] = value
        for op, name, day in ((">=", "since", self.since), ("<", "until", self.until)):
            if day is not None:
                clauses.append(f"day {op} :{prefix}{name}")
                params[prefix + name] = day
        return " AND ".join(clauses), params


def event_rates(
    conn: Connection, filters: Filters, *, group: Group = "driver", period: Period = "week"
) -> list[dict[str, Any]]:
    """Events per group, period and type, with the group's driving hours and kilometres in that period, events per hour
    and per 100 km. km (and per_100km) is None unless every clip of the group and period has a known distance: a
    partial distance would inflate the rate."""
    key = GROUP_COLUMN[group]
    bucket = "day" if period == "day" else "date_trunc('week', day)::date"
    where_events, params = filters.where()
    where_driving, _ = filters.where(events=False)
    sql = f"""
        WITH ev AS (SELECT {key} AS who, {bucket} AS period, type, max(severity) AS severity, count(*) AS events
                    FROM report_events WHERE {where_events} GROUP BY 1, 2, 3),
             dr AS (SELECT {key} AS who, {bucket} AS period, sum(seconds) / 3600.0 AS hours,
                           CASE WHEN count(km) = count(*) THEN sum(km) END AS km
                    FROM report_driving WHERE {where_driving} GROUP BY 1, 2)
        SELECT ev.who, ev.period, ev.type, ev.severity, ev.events, round(coalesce(dr.hours, 0)::numeric, 3) AS hours,
               CASE WHEN dr.hours > 0 THEN round((ev.events / dr.hours)::numeric, 2) END AS per_hour,
               round(dr.km::numeric, 3) AS km,
               CASE WHEN dr.km > 0 THEN round((100 * ev.events / dr.km)::numeric, 2) END AS per_100km
        FROM ev LEFT JOIN dr USING (who, period)
        ORDER BY ev.period DESC, ev.severity DESC, ev.events DESC, ev.who, ev.type"""
    return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def trend(conn: Connection, filters: Filters, *, group: Group = "driver") -> list[dict[str, Any]]:
    """Events per group and type in [since, until) against the period of the same length just before it."""
    if filters.since is None or filters.until is None:
        raise ValueError("a trend needs --since and --until")
    length = filters.until - filters.since
    try:
        before = filters.since - length
    except OverflowError:  # a window reaching back past year 1: the previous period starts there
        before = date.min
    previous = Filters(**{**filters.__dict__, "since": before, "until": filters.since})
    key = GROUP_COLUMN[group]
    now_where, now_params = filters.where()
    before_where, before_params = previous.where(prefix="prev_")
    sql = f"""
        WITH now AS (SELECT {key} AS who, type, count(*) AS events FROM report_events WHERE {now_where} GROUP BY 1, 2),
             before AS (SELECT {key} AS who, type, count(*) AS events FROM report_events WHERE {before_where}
                        GROUP BY 1, 2)
        SELECT coalesce(now.who, before.who) AS who, coalesce(now.type, before.type) AS type,
               coalesce(now.events, 0) AS events, coalesce(before.events, 0) AS previous,
               coalesce(now.events, 0) - coalesce(before.events, 0) AS change
        FROM now FULL JOIN before ON now.who = before.who AND now.type = before.type
        ORDER BY change DESC, who, type"""
    return [dict(r._mapping) for r in conn.execute(text(sql), {**now_params, **before_params})]


def review_queue(conn: Connection, filters: Filters, *, limit: int = 50) -> list[dict[str, Any]]:
    """Unreviewed answers, most severe and most recent first."""
    unfiltered_by_day = Filters(fleet=filters.fleet, vehicle=filters.vehicle, driver=filters.driver)
    where, params = unfiltered_by_day.where(events=False)
    # The answer's public id (migration 0014) for the page rows only: looked up after the limit.
    sql = f"""SELECT (SELECT public_id FROM inferences i WHERE i.id = q.inference_id) AS answer_id,
                     clip_id, fleet_id, vehicle_id, driver_id, occurred_at, events, max_severity
              FROM (SELECT inference_id, clip_id, fleet_id, vehicle_id, driver_id, occurred_at, events, max_severity
                    FROM review_queue WHERE {where}
                    ORDER BY max_severity DESC, occurred_at DESC LIMIT :limit) q
              ORDER BY max_severity DESC, occurred_at DESC"""
    return [dict(r._mapping) for r in conn.execute(text(sql), {**params, "limit": limit})]


def default_window(today: date, days: int = 7) -> tuple[date, date]:
    return today - timedelta(days=days - 1), today + timedelta(days=1)


def score_settings(conn: Connection, fleet_id: str) -> ScoreSettings:
    """The fleet's weights and penalties (migration 0015), the defaults where it set none."""
    row = conn.execute(
        text(
            "SELECT weights, penalty_per_100km, penalty_per_hour FROM fleet_score_settings WHERE fleet_id = :f"
        ),
        {"f": fleet_id},
    ).first()
    if row is None:
        return ScoreSettings()
    weights = {str(k): float(v) for k, v in (row.weights or {}).items()}
    return ScoreSettings.with_overrides(weights, row.penalty_per_100km, row.penalty_per_hour)


def _shifted(day: date, days: int) -> date:
    """`day` moved by `days`, stopping at the calendar's ends (a window to 9999-12-31 was a 500)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def score_weeks(filters: Filters) -> Filters:
    """The window widened to whole weeks (Monday to Monday, UTC): a score is a week's."""
    since = _shifted(filters.since, -filters.since.weekday()) if filters.since else None
    until = _shifted(filters.until, (7 - filters.until.weekday()) % 7) if filters.until else None
    return Filters(**{**filters.__dict__, "since": since, "until": until, "event_type": None})


def safety_scores(conn: Connection, filters: Filters, settings: ScoreSettings) -> list[WeekScore]:
    """Every driver's score per week of the window (safety_score.py's formula), from driver_week_facts (migration
    0021): the window's driving and counted events per driver, week and vehicle, kept by triggers, so a page reads
    a few hundred rows of one index range instead of grouping the fleet's events and clips of those weeks (124 ms
    p95 at a million events, `bench reports`). It holds counts per type, so the fleet's weights apply here."""
    weeks = score_weeks(filters)
    if weeks.fleet is None or weeks.since is None or weeks.until is None:
        raise ValueError("scores need a fleet and a window")
    params: dict[str, Any] = {"fleet": weeks.fleet, "since": weeks.since, "until": weeks.until}
    narrow = ""
    for column, value in (("driver_id", weeks.driver), ("vehicle_id", weeks.vehicle)):
        if value is not None:
            narrow += f" AND {column} = :{column}"
            params[column] = value
    weekly: dict[tuple[str, date], _DriverWeek] = {}
    for r in conn.execute(
        text(f"""SELECT driver_id, week, clips, seconds, km_clips, km, events FROM driver_week_facts
                 WHERE fleet_id = :fleet AND week >= :since AND week < :until{narrow}"""),
        params,
    ):
        weekly.setdefault((r.driver_id, r.week), _DriverWeek()).add(
            r.clips, r.seconds, r.km_clips, r.km, r.events
        )
    scores = []
    for (driver_id, week), w in weekly.items():
        if w.clips == 0:  # events only: the clips of that driving started the week before
            continue
        score = week_score(
            driver_id,
            week,
            w.counts,
            km=float(w.km) if w.km_clips == w.clips else None,
            hours=float(w.seconds) / 3600.0,
            settings=settings,
        )
        if score is not None:
            scores.append(score)
    return sorted(
        scores, key=lambda s: (-s.week.toordinal(), s.score, s.driver_id or "")
    )  # newest, worst first


@dataclass
class _DriverWeek:
    """A driver's week summed over its vehicles' rows of driver_week_facts."""

    clips: int = 0
    seconds: Decimal = Decimal(0)
    km_clips: int = 0
    km: Decimal = Decimal(0)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, clips: int, seconds: Decimal, km_clips: int, km: Decimal, events: dict[str, int]) -> None:
        self.clips += clips
        self.seconds += seconds
        self.km_clips += km_clips
        self.km += km
        for type_, n in events.items():
            self.counts[type_] = self.counts.get(type_, 0) + int(n)


def score_events(conn: Connection, fleet_id: str, driver_id: str, week: date) -> list[dict[str, Any]]:
    """The counted events behind a driver's score of `week`, oldest first, with their clips."""
    return [
        dict(r)
        for r in conn.execute(
            text("""SELECT clip_id, type, severity, coaching_status, occurred_at FROM report_events
                    WHERE fleet_id = :f AND driver_id = :d AND week = :w AND coaching_status IN :counted
                    ORDER BY occurred_at, type""").bindparams(bindparam("counted", expanding=True)),
            {"f": fleet_id, "d": driver_id, "w": week, "counted": list(COUNTED_STATUSES)},
        ).mappings()
    ]


def score_rows(scores: list[WeekScore]) -> list[dict[str, Any]]:
    """Scores as report rows, each with its change against the driver's previous week (None when that week had no
    driving) and its explanation."""
    by_week = {(s.driver_id, s.week): s.score for s in scores}
    return [
        {
            "driver": s.driver_id,
            "week": s.week,
            "score": s.score,
            "change": None
            if (previous := by_week.get((s.driver_id, s.week - timedelta(days=7)))) is None
            else s.score - previous,
            "points": s.points,
            "per": s.per,
            "rate": round(s.rate, 3),
            "km": None if s.km is None else round(s.km, 1),
            "hours": round(s.hours, 2),
            "events": ", ".join(f"{line.type} {line.events} x {line.weight:g}" for line in s.lines),
            "formula": s.formula,
        }
        for s in scores
    ]
