"""What the console's pages and API read, on a fleet connection (so row-level security applies to every query).

Report rows come from `streams.console.reports`, the same functions `drivecoach report` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import Connection

from streams.console.footage import Stretch
from streams.console.reports import (
    Filters,
    review_queue,
    safety_scores,
    score_events,
    score_rows,
    score_settings,
    trend,
)
from streams.console.rule_report import clip_rule_events
from streams.console.safety_score import WeekScore


@dataclass(frozen=True)
class ClipDetail:
    clip_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str | None
    start: datetime
    duration_s: float
    num_frames: int
    sample_fps: float
    frames_uri: str
    revision: int
    inference_id: int | None  # the key, for the queries here; never shown (answer_id is)
    answer_id: UUID | None
    model_version: str | None
    valid: bool | None
    description: str
    instruction: str
    events: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    # what the telemetry rules found in the clip (migration 0023), each with `agrees`; events of a rule type carry
    # `rules`, their outcome against them (streams/console/rule_report.py)
    rule_events: list[dict[str, Any]] = field(default_factory=list)


def clip_frames(conn: Connection, clip_id: str) -> tuple[str, int] | None:
    """Where a clip's frames are, and how many: all a frame request needs (a page asks for every frame)."""
    row = conn.execute(
        text("SELECT frames_uri, num_frames FROM clips WHERE clip_id = :clip"), {"clip": clip_id}
    ).first()
    return None if row is None else (row.frames_uri, row.num_frames)


def current_answer(conn: Connection, clip_id: str) -> tuple[int | None, float] | None:
    """The clip's current answer (None before the worker's) and the clip's length: all a review action needs."""
    row = conn.execute(
        text("""
        SELECT i.id, c.end_ts - c.start_ts AS duration_s FROM clips c
        LEFT JOIN current_inferences i ON i.clip_id = c.clip_id WHERE c.clip_id = :clip"""),
        {"clip": clip_id},
    ).first()
    return None if row is None else (row.id, row.duration_s)


def clip_detail(conn: Connection, clip_id: str) -> ClipDetail | None:
    """The clip, its current answer (the newest revision's, by the newest model version), events with severity,
    reviews, and the telemetry rules' events beside the answer's."""
    row = (
        conn.execute(
            text("""
        SELECT c.clip_id, c.fleet_id, c.vehicle_id, c.driver_id, to_timestamp(c.start_ts) AS start,
               c.end_ts - c.start_ts AS duration_s, c.num_frames, c.sample_fps, c.frames_uri, c.revision,
               i.id AS inference_id, (SELECT public_id FROM inferences p WHERE p.id = i.id) AS answer_id,
               i.model_version, i.valid, coalesce(i.description, '') AS description,
               coalesce(n.text, '') AS instruction
        FROM clips c
        LEFT JOIN current_inferences i ON i.clip_id = c.clip_id
        LEFT JOIN instructions n ON n.inference_id = i.id
        WHERE c.clip_id = :clip"""),
            {"clip": clip_id},
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    events = [
        dict(r)
        for r in conn.execute(
            text("""
        SELECT e.public_id AS id, e.type, e.view, e.start_s, e.end_s, e.coaching_status, coalesce(t.severity, 0) AS severity
        FROM events e LEFT JOIN event_types t ON t.type = e.type
        WHERE e.inference_id = :inf ORDER BY e.start_s, e.type"""),
            {"inf": row["inference_id"]},
        ).mappings()
    ]
    # Every review of the clip: those of the current answer, and those kept from an earlier revision of the clip
    # (a late upload rebuilt it) or an earlier model's answer, marked as not current.
    reviews = [
        dict(r)
        for r in conn.execute(
            text("""
        SELECT r.public_id AS id, r.reviewer, r.verdict, r.corrected_turn1, r.corrected_instruction, r.created_at,
               i.clip_revision, i.model_version, i.id IS NOT DISTINCT FROM :inf AS current
        FROM reviews r JOIN inferences i ON i.id = r.inference_id
        WHERE i.clip_id = :clip ORDER BY r.created_at DESC, r.id DESC"""),
            {"inf": row["inference_id"], "clip": clip_id},
        ).mappings()
    ]
    rule_events = clip_rule_events(conn, clip_id, events)
    return ClipDetail(**dict(row), events=events, reviews=reviews, rule_events=rule_events)


@dataclass(frozen=True)
class Dashboard:
    since: date
    until: date
    days: list[dict[str, Any]]  # per day: events, driving hours, events per driving hour
    types: list[dict[str, Any]]  # per type over the window
    drivers: list[dict[str, Any]]  # per driver: events, hours, per hour, change against the previous window
    statuses: dict[str, int]
    queue: list[dict[str, Any]]
    scores: list[dict[str, Any]]  # each driver's safety score of the newest week, lowest first


def coaching_list(conn: Connection, fleet_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """Reviewed clips whose events still wait for the driver to be coached: most severe, then oldest first (the
    longest-waiting conversation comes next)."""
    return [
        dict(r)
        for r in conn.execute(
            text("""
        SELECT clip_id, vehicle_id, driver_id, min(occurred_at) AS occurred_at, count(*) AS events,
               max(severity) AS max_severity, string_agg(DISTINCT type, ', ') AS types
        FROM report_events WHERE fleet_id = :fleet AND coaching_status = 'needs_coaching'
        GROUP BY clip_id, vehicle_id, driver_id
        ORDER BY max_severity DESC, occurred_at LIMIT :limit"""),
            {"fleet": fleet_id, "limit": limit},
        ).mappings()
    ]


def latest_day(conn: Connection, fleet_id: str) -> date | None:
    """The newest day with driving: the dashboard's window ends there, so a fleet that stopped uploading (or the
    demo's simulated days) still shows its last weeks rather than an empty chart."""
    return conn.execute(
        text("""SELECT (to_timestamp(max(start_ts)) AT TIME ZONE 'UTC')::date FROM clips
                                WHERE fleet_id = :fleet"""),
        {"fleet": fleet_id},
    ).scalar()  # report_driving's day


def dashboard(conn: Connection, fleet_id: str, *, days: int = 28, until: date | None = None) -> Dashboard:
    """Eight queries: the newest day, one pass over the window's driving and one over its events (the rules of
    `streams.console.reports.event_rates`), the drivers' trend, the top of the review queue, and the newest week's
    safety scores (the fleet's settings, its reviewed events and driving)."""
    end = (until or latest_day(conn, fleet_id) or date.today()) + timedelta(days=1)
    start = end - timedelta(days=days)
    window = Filters(fleet=fleet_id, since=start, until=end)
    span = {"fleet": fleet_id, "since": start, "until": end}
    driving = (
        conn.execute(
            text("""
        SELECT driver_id, day, sum(seconds) / 3600.0 AS hours, sum(km) AS km, bool_and(km IS NOT NULL) AS known
        FROM report_driving WHERE fleet_id = :fleet AND day >= :since AND day < :until GROUP BY 1, 2"""),
            span,
        )
        .mappings()
        .all()
    )
    hours: dict[date, float] = {}
    driver_hours: dict[str | None, float] = {}
    for r in driving:
        hours[r["day"]] = hours.get(r["day"], 0.0) + float(r["hours"])
        driver_hours[r["driver_id"]] = driver_hours.get(r["driver_id"], 0.0) + float(r["hours"])
    km = sum(float(r["km"]) for r in driving) if driving and all(r["known"] for r in driving) else None
    per_day: dict[date, int] = {}
    per_type: dict[str, dict[str, Any]] = {}
    statuses: dict[str, int] = {}
    for r in conn.execute(
        text("""
            SELECT day, type, max(severity) AS severity, coaching_status, count(*) AS events FROM report_events
            WHERE fleet_id = :fleet AND day >= :since AND day < :until GROUP BY 1, 2, 4"""),
        span,
    ).mappings():
        per_day[r["day"]] = per_day.get(r["day"], 0) + int(r["events"])
        statuses[r["coaching_status"]] = statuses.get(r["coaching_status"], 0) + int(r["events"])
        t = per_type.setdefault(r["type"], {"type": r["type"], "severity": r["severity"], "events": 0})
        t["events"] += int(r["events"])
    total_hours = sum(hours.values())
    for t in per_type.values():
        t["per_hour"] = round(t["events"] / total_hours, 2) if total_hours else None
        t["per_100km"] = round(100 * t["events"] / km, 2) if km else None
    day_rows = []
    for i in range(days):
        day = start + timedelta(days=i)
        events, driven = per_day.get(day, 0), hours.get(day, 0.0)
        day_rows.append(
            {
                "day": day,
                "events": events,
                "hours": round(driven, 2),
                "per_hour": round(events / driven, 2) if driven else 0.0,
            }
        )
    return Dashboard(
        start,
        end,
        day_rows,
        sorted(per_type.values(), key=lambda t: (-t["severity"], -t["events"], t["type"])),
        _drivers(conn, window, driver_hours),
        statuses,
        review_queue(conn, Filters(fleet=fleet_id), limit=10),
        _newest_scores(conn, fleet_id, end),
    )


def _newest_scores(conn: Connection, fleet_id: str, end: date) -> list[dict[str, Any]]:
    """The newest week's scores (with the change against the week before: two weeks read)."""
    rows = score_rows(
        safety_scores(
            conn,
            Filters(fleet=fleet_id, since=end - timedelta(days=8), until=end),
            score_settings(conn, fleet_id),
        )
    )
    newest = max((r["week"] for r in rows), default=None)
    return [r for r in rows if r["week"] == newest]


def _drivers(conn: Connection, window: Filters, hours: dict[str | None, float]) -> list[dict[str, Any]]:
    by_driver: dict[str, dict[str, Any]] = {}
    for r in trend(conn, window, group="driver"):
        d = by_driver.setdefault(
            r["who"] or "(unknown)", {"driver": r["who"] or "(unknown)", "events": 0, "previous": 0}
        )
        d["events"] += int(r["events"])
        d["previous"] += int(r["previous"])
    for who, driven in hours.items():
        d = by_driver.setdefault(
            who or "(unknown)", {"driver": who or "(unknown)", "events": 0, "previous": 0}
        )
        d["hours"] = round(driven, 2)
    for d in by_driver.values():
        d.setdefault("hours", 0.0)
        d["per_hour"] = round(d["events"] / d["hours"], 2) if d["hours"] else None
        d["change"] = d["events"] - d["previous"]
    return sorted(by_driver.values(), key=lambda d: (-(d["per_hour"] or 0), -d["events"], d["driver"]))


__all__ = [
    "ClipDetail",
    "Dashboard",
    "clip_detail",
    "clip_frames",
    "coaching_list",
    "current_answer",
    "dashboard",
    "latest_day",
]


def recent_scores(conn: Connection, fleet_id: str, *, weeks: int = 8) -> list[dict[str, Any]]:
    """Every driver's score for each of the `weeks` weeks up to the fleet's latest driving, newest week and lowest
    score first, each with its change against the driver's week before."""
    end = (latest_day(conn, fleet_id) or date.today()) + timedelta(days=1)
    window = Filters(fleet=fleet_id, since=end - timedelta(days=7 * weeks), until=end)
    return score_rows(safety_scores(conn, window, score_settings(conn, fleet_id)))


@dataclass(frozen=True)
class ScoreExplanation:
    score: WeekScore
    previous: int | None  # the driver's score the week before (None: no driving then)
    events: list[dict[str, Any]]  # the counted events, with their clips


def explain_score(conn: Connection, fleet_id: str, driver_id: str, week: date) -> ScoreExplanation | None:
    """Everything behind one driver's score of one week: the formula's numbers and the events it counted."""
    monday = week - timedelta(days=week.weekday())
    window = Filters(
        fleet=fleet_id, driver=driver_id, since=monday - timedelta(days=7), until=monday + timedelta(days=7)
    )
    scores = {s.week: s for s in safety_scores(conn, window, score_settings(conn, fleet_id))}
    if monday not in scores:
        return None
    before = scores.get(monday - timedelta(days=7))
    return ScoreExplanation(
        scores[monday],
        None if before is None else before.score,
        score_events(conn, fleet_id, driver_id, monday),
    )


def clip_footage(conn: Connection, clip_id: str) -> tuple[float, float, list[Stretch]] | None:
    """A clip's window and the camera uploads it was built from (none for a clip stored without them)."""
    rows = conn.execute(
        text("""SELECT c.start_ts AS clip_start, c.end_ts AS clip_end, s.camera, s.start_ts, s.end_ts, s.video_uri
                FROM clips c
                LEFT JOIN clip_segments cs ON cs.clip_id = c.clip_id
                LEFT JOIN segments s ON s.segment_id = cs.segment_id
                WHERE c.clip_id = :clip"""),
        {"clip": clip_id},
    ).all()
    if not rows:
        return None
    stretches = [Stretch(r.camera, r.start_ts, r.end_ts, r.video_uri) for r in rows if r.camera is not None]
    return rows[0].clip_start, rows[0].clip_end, stretches
