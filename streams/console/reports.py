"""Safety managers' reports over the views of migrations 0002 and 0003: events per group and period with rates per
driving hour and per 100 km, the trend against the previous period, and the review queue. Plain SQL over the views, so the README's example
queries and these are the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection

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
