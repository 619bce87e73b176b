"""Coaching sessions (migration 0016): a manager assigns a driver a session on some of their clips whose events wait
for coaching; the driver opens a signed link (links.py) and acknowledges, which marks those events coached; overdue
sessions are listed; and each acknowledged session's effect is measured as the driver's event rate per driving hour
in the weeks before it against the weeks after. Every function runs under the fleet's role (tenancy.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

LINK_DAYS_AFTER_DUE = 14  # a driver's link works until two weeks after the session's due day
EFFECT_WEEKS = 4


class CoachingError(ValueError):
    """A session that cannot be made as asked (a sentence for the page)."""


def waiting_clips(conn: Connection, driver_id: str) -> list[dict[str, Any]]:
    """The driver's clips whose events wait for coaching, oldest first: what a new session may cover."""
    return [
        dict(r)
        for r in conn.execute(
            text("""SELECT clip_id, min(occurred_at) AS occurred_at, count(*) AS events, max(severity) AS max_severity,
                           string_agg(DISTINCT type, ', ') AS types
                    FROM report_events WHERE driver_id = :d AND coaching_status = 'needs_coaching'
                    GROUP BY clip_id ORDER BY occurred_at"""),
            {"d": driver_id},
        ).mappings()
    ]


def create_session(
    conn: Connection,
    *,
    fleet_id: str,
    manager: str,
    driver_id: str,
    coach: str,
    due_on: date,
    notes: str,
    clip_ids: list[str],
) -> uuid.UUID:
    """Record a session on `clip_ids` (each must be the driver's, with events waiting for coaching)."""
    if not coach.strip():
        raise CoachingError("name the coach")
    if not clip_ids:
        raise CoachingError("choose at least one clip whose events wait for coaching")
    waiting = {c["clip_id"] for c in waiting_clips(conn, driver_id)}
    if stray := sorted(set(clip_ids) - waiting):
        raise CoachingError(f"clip {stray[0]} is not one of this driver's clips waiting for coaching")
    session_id, public_id = conn.execute(
        text("""INSERT INTO coaching_sessions (fleet_id, driver_id, coach, due_on, notes, created_by)
                VALUES (:f, :d, :coach, :due, :notes, :by) RETURNING id, public_id"""),
        {
            "f": fleet_id,
            "d": driver_id,
            "coach": coach.strip(),
            "due": due_on,
            "notes": notes.strip(),
            "by": manager,
        },
    ).one()
    conn.execute(
        text("INSERT INTO coaching_session_clips (session_id, clip_id, fleet_id) VALUES (:s, :c, :f)"),
        [{"s": session_id, "c": c, "f": fleet_id} for c in sorted(set(clip_ids))],
    )
    return uuid.UUID(str(public_id))


def link_expiry(due_on: date) -> datetime:
    end = due_on + timedelta(days=LINK_DAYS_AFTER_DUE + 1)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def sessions(conn: Connection, today: date) -> list[dict[str, Any]]:
    """The fleet's sessions: overdue first (past due, not acknowledged), then open by due day, then acknowledged."""
    rows = [
        dict(r)
        for r in conn.execute(
            text("""SELECT s.public_id, s.driver_id, s.coach, s.due_on, s.notes, s.created_by, s.created_at,
                           s.acknowledged_at, count(c.clip_id) AS clips
                    FROM coaching_sessions s LEFT JOIN coaching_session_clips c ON c.session_id = s.id
                    GROUP BY s.id ORDER BY s.due_on, s.id"""),
        ).mappings()
    ]
    for r in rows:
        r["status"] = (
            "acknowledged" if r["acknowledged_at"] else ("overdue" if r["due_on"] < today else "open")
        )
    order = {"overdue": 0, "open": 1, "acknowledged": 2}
    return sorted(rows, key=lambda r: order[r["status"]])


def clip_sessions(conn: Connection, clip_id: str, today: date) -> list[dict[str, Any]]:
    """The sessions that include the clip (its evidence package lists them), oldest first, with `status` as
    `sessions` gives it."""
    rows = [
        dict(r)
        for r in conn.execute(
            text("""SELECT s.public_id, s.driver_id, s.coach, s.due_on, s.notes, s.created_by, s.created_at,
                           s.acknowledged_at
                    FROM coaching_sessions s JOIN coaching_session_clips c ON c.session_id = s.id
                    WHERE c.clip_id = :clip ORDER BY s.created_at, s.id"""),
            {"clip": clip_id},
        ).mappings()
    ]
    for r in rows:
        r["status"] = (
            "acknowledged" if r["acknowledged_at"] else ("overdue" if r["due_on"] < today else "open")
        )
    return rows


@dataclass(frozen=True)
class SessionView:
    public_id: uuid.UUID
    driver_id: str
    coach: str
    due_on: date
    notes: str
    acknowledged_at: datetime | None
    clips: list[
        dict[str, Any]
    ]  # clip_id, start, instruction, events [type, start_s, end_s, severity], num_frames


def session_view(conn: Connection, public_id: uuid.UUID) -> SessionView | None:
    """What the driver's page shows: the session, and each clip's events and instruction (the current answer's)."""
    s = conn.execute(
        text("""SELECT id, public_id, driver_id, coach, due_on, notes, acknowledged_at FROM coaching_sessions
                WHERE public_id = :p"""),
        {"p": public_id},
    ).first()
    if s is None:
        return None
    clips = [
        dict(r)
        for r in conn.execute(
            text("""SELECT c.clip_id, to_timestamp(c.start_ts) AS start, c.end_ts - c.start_ts AS duration_s,
                           c.num_frames, c.sample_fps, i.id AS inference_id, coalesce(n.text, '') AS instruction
                    FROM coaching_session_clips sc
                    JOIN clips c ON c.clip_id = sc.clip_id
                    LEFT JOIN current_inferences i ON i.clip_id = c.clip_id
                    LEFT JOIN instructions n ON n.inference_id = i.id
                    WHERE sc.session_id = :s ORDER BY c.start_ts"""),
            {"s": s.id},
        ).mappings()
    ]
    for clip in clips:
        clip["events"] = [
            dict(e)
            for e in conn.execute(
                text("""SELECT e.type, e.start_s, e.end_s, coalesce(t.severity, 0) AS severity, e.coaching_status
                        FROM events e LEFT JOIN event_types t ON t.type = e.type
                        WHERE e.inference_id = :i AND e.coaching_status IN ('needs_coaching', 'coached')
                        ORDER BY e.start_s"""),
                {"i": clip["inference_id"]},
            ).mappings()
        ]
    return SessionView(s.public_id, s.driver_id, s.coach, s.due_on, s.notes, s.acknowledged_at, clips)


def session_clip(conn: Connection, public_id: uuid.UUID, clip_id: str) -> bool:
    """Whether the session covers the clip (the driver's page serves only its own clips' frames)."""
    return (
        conn.execute(
            text("""SELECT 1 FROM coaching_session_clips sc JOIN coaching_sessions s ON s.id = sc.session_id
                    WHERE s.public_id = :p AND sc.clip_id = :c"""),
            {"p": public_id, "c": clip_id},
        ).first()
        is not None
    )


def acknowledge(conn: Connection, public_id: uuid.UUID) -> int:
    """Record the driver's acknowledgement (once; again is a no-op) and mark the session's events coached: how many
    events it marked."""
    session_id = conn.execute(
        text("""UPDATE coaching_sessions SET acknowledged_at = coalesce(acknowledged_at, now())
                WHERE public_id = :p RETURNING id"""),
        {"p": public_id},
    ).scalar()
    if session_id is None:
        return 0
    return conn.execute(
        text("""UPDATE events SET coaching_status = 'coached'
                WHERE coaching_status = 'needs_coaching' AND inference_id IN (
                    SELECT i.id FROM current_inferences i
                    JOIN coaching_session_clips sc ON sc.clip_id = i.clip_id WHERE sc.session_id = :s)"""),
        {"s": session_id},
    ).rowcount


def effectiveness(conn: Connection, *, weeks: int = EFFECT_WEEKS) -> list[dict[str, Any]]:
    """Per acknowledged session: the driver's events (all but dismissed ones) per driving hour in the `weeks` weeks
    before the session was assigned, and in the `weeks` weeks after the driver acknowledged it."""
    done = conn.execute(
        text("""SELECT public_id, driver_id, coach, created_at::date AS assigned, acknowledged_at::date AS acknowledged
                FROM coaching_sessions WHERE acknowledged_at IS NOT NULL ORDER BY acknowledged_at""")
    ).all()
    span = timedelta(weeks=weeks)
    rows = []
    for s in done:
        before = _rate(conn, s.driver_id, s.assigned - span, s.assigned)
        after = _rate(
            conn, s.driver_id, s.acknowledged + timedelta(days=1), s.acknowledged + timedelta(days=1) + span
        )
        rows.append(
            {
                "session": s.public_id,
                "driver": s.driver_id,
                "coach": s.coach,
                "acknowledged": s.acknowledged,
                "before_per_hour": before,
                "after_per_hour": after,
                "change": None if before is None or after is None else round(after - before, 2),
            }
        )
    return rows


def _rate(conn: Connection, driver_id: str, since: date, until: date) -> float | None:
    """Events per driving hour of the driver in [since, until); None without driving."""
    params = {"d": driver_id, "since": since, "until": until}
    hours = conn.execute(
        text("""SELECT sum(seconds) / 3600.0 FROM report_driving
                WHERE driver_id = :d AND day >= :since AND day < :until"""),
        params,
    ).scalar()
    if not hours:
        return None
    events = conn.execute(
        text("""SELECT count(*) FROM report_events
                WHERE driver_id = :d AND day >= :since AND day < :until AND coaching_status IN :kept""").bindparams(
            bindparam("kept", expanding=True)
        ),
        {**params, "kept": ["needs_review", "needs_coaching", "coached"]},
    ).scalar_one()
    return round(events / float(hours), 2)
