"""Retention's reads and writes in Postgres, as the job's own role (migration 0019): candidates and their state,
the intents and deletions it logs, and the deletions of rows, each in a transaction that checks protection again."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from streams.retention.policy import DAY_S, ClipState, Periods

LOCK_KEY = 0x44435245  # pg_advisory_lock key of `drivecoach retention run` ("DCRE")

PROTECTED = """(EXISTS (SELECT 1 FROM legal_holds h
                        WHERE h.clip_id = c.clip_id AND h.fleet_id = c.fleet_id AND h.released_at IS NULL)
                OR EXISTS (SELECT 1 FROM coaching_session_clips sc
                           JOIN coaching_sessions s ON s.id = sc.session_id AND s.fleet_id = sc.fleet_id
                           WHERE sc.clip_id = c.clip_id AND s.acknowledged_at IS NULL))"""
VIDEO_GONE = "EXISTS (SELECT 1 FROM retention_deletions d WHERE d.blob_uri = c.frames_uri AND d.deleted_at IS NOT NULL)"


@dataclass(frozen=True)
class ClipRow:
    state: ClipState
    fleet_id: str
    frames_uri: str
    revision: int
    answered_frames: tuple[str, ...]


@dataclass(frozen=True)
class SegmentRow:
    segment_id: str
    fleet_id: str
    end_ts: float
    video_uri: str
    logged: bool
    clip_ids: tuple[str, ...]


@dataclass(frozen=True)
class Intent:
    """A blob deletion recorded and not yet confirmed."""

    id: int
    fleet_id: str
    kind: str
    subject: str
    blob_uri: str


def try_lock(conn: Connection) -> bool:
    """One run at a time per database: a session lock, held until `unlock` or the session ends (a killed process's
    session ends with it)."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar_one())


def unlock(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})


def fleet_periods(conn: Connection, fleets: list[str] | None = None) -> dict[str, Periods]:
    """Every fleet with a retention period (a fleet without one keeps everything)."""
    rows = conn.execute(
        text("""SELECT fleet_id, video_days, results_days FROM fleet_retention
                WHERE (video_days IS NOT NULL OR results_days IS NOT NULL)
                  AND (CAST(:fleets AS text[]) IS NULL OR fleet_id = ANY(CAST(:fleets AS text[])))
                ORDER BY fleet_id"""),
        {"fleets": fleets},
    )
    return {r.fleet_id: Periods(r.video_days, r.results_days) for r in rows}


def candidate_clips(
    conn: Connection, fleet_id: str, periods: Periods, now: float, *, after: str, limit: int
) -> list[str]:
    """The next page (by id) of the fleet's clips with something expired left: frames not yet deleted past the video
    period, answers past the results period, or a row past both. Protected ones too: `decide` keeps them."""
    video_cut = now - periods.video_days * DAY_S if periods.video_days is not None else None
    results_cut = now - periods.results_days * DAY_S if periods.results_days is not None else None
    due = []
    if video_cut is not None:
        due.append(f"(c.end_ts <= :video_cut AND NOT {VIDEO_GONE})")
    if results_cut is not None:
        due.append(
            "(c.end_ts <= :results_cut AND EXISTS (SELECT 1 FROM inferences i WHERE i.clip_id = c.clip_id))"
        )
    if video_cut is not None and results_cut is not None:
        due.append("c.end_ts <= least(:video_cut, :results_cut)")
    if not due:
        return []
    return list(
        conn.execute(
            text(f"""SELECT c.clip_id FROM clips c
                     WHERE c.fleet_id = :f AND c.clip_id > :after AND ({" OR ".join(due)})
                     ORDER BY c.clip_id LIMIT :n"""),
            {"f": fleet_id, "after": after, "n": limit, "video_cut": video_cut, "results_cut": results_cut},
        ).scalars()
    )


def clip_rows(conn: Connection, clip_ids: list[str]) -> dict[str, ClipRow]:
    rows = conn.execute(
        text(f"""SELECT c.clip_id, c.fleet_id, c.end_ts, c.frames_uri, c.revision, {PROTECTED} AS protected,
                        EXISTS (SELECT 1 FROM retention_deletions d WHERE d.blob_uri = c.frames_uri) AS video_gone,
                        EXISTS (SELECT 1 FROM inferences i WHERE i.clip_id = c.clip_id) AS has_results,
                        ARRAY(SELECT DISTINCT i.frames_uri FROM inferences i
                              WHERE i.clip_id = c.clip_id AND i.frames_uri IS NOT NULL) AS answered
                 FROM clips c WHERE c.clip_id = ANY(:ids)"""),
        {"ids": clip_ids},
    )
    return {
        r.clip_id: ClipRow(
            state=ClipState(r.clip_id, r.end_ts, r.protected, r.video_gone, r.has_results),
            fleet_id=r.fleet_id,
            frames_uri=r.frames_uri,
            revision=r.revision,
            answered_frames=tuple(sorted(r.answered)),
        )
        for r in rows
    }


def protected_clips(conn: Connection, clip_ids: list[str]) -> set[str]:
    """Those of `clip_ids` protected now (a fresh statement: sees holds and sessions committed since the plan)."""
    return set(
        conn.execute(
            text(f"SELECT c.clip_id FROM clips c WHERE c.clip_id = ANY(:ids) AND {PROTECTED}"),
            {"ids": clip_ids},
        ).scalars()
    )


_SEGMENTS = """SELECT s.segment_id, s.fleet_id, s.end_ts, s.video_uri,
                      EXISTS (SELECT 1 FROM retention_deletions d WHERE d.blob_uri = s.video_uri) AS logged,
                      ARRAY(SELECT l.clip_id FROM clip_segments l WHERE l.segment_id = s.segment_id
                            ORDER BY l.clip_id) AS clip_ids
               FROM segments s"""


def _segment_rows(conn: Connection, where: str, params: dict[str, Any]) -> list[SegmentRow]:
    rows = conn.execute(text(f"{_SEGMENTS} WHERE {where} ORDER BY s.segment_id"), params)
    return [
        SegmentRow(r.segment_id, r.fleet_id, r.end_ts, r.video_uri, r.logged, tuple(r.clip_ids)) for r in rows
    ]


def segments_of(conn: Connection, clip_ids: list[str]) -> list[SegmentRow]:
    """The uploads the clips were built from, each with every clip that links it."""
    return _segment_rows(
        conn,
        "s.segment_id IN (SELECT segment_id FROM clip_segments WHERE clip_id = ANY(:ids))",
        {"ids": clip_ids},
    )


def unlinked_segments(conn: Connection, fleet_id: str, periods: Periods, now: float) -> list[SegmentRow]:
    """The fleet's uploads no clip links (their clips' rows deleted, or never built) past the video period whose
    video is not logged yet, and those whose video is gone but whose row remains."""
    if periods.video_days is None:
        return []
    return _segment_rows(
        conn,
        """s.fleet_id = :f AND s.end_ts <= :cut
           AND NOT EXISTS (SELECT 1 FROM clip_segments l WHERE l.segment_id = s.segment_id)""",
        {"f": fleet_id, "cut": now - periods.video_days * DAY_S},
    )


def plan_blobs(conn: Connection, run_id: uuid.UUID, fleet_id: str, blobs: list[tuple[str, str, str]]) -> int:
    """Record the intents to delete `blobs` (kind, subject, URI); a URI already logged is left as it is."""
    planned = 0
    for kind, subject, uri in blobs:
        planned += conn.execute(
            text("""INSERT INTO retention_deletions (run_id, fleet_id, kind, subject, blob_uri)
                    VALUES (:run, :f, :kind, :subject, :uri)
                    ON CONFLICT (blob_uri) WHERE blob_uri <> '' DO NOTHING"""),
            {"run": run_id, "f": fleet_id, "kind": kind, "subject": subject, "uri": uri},
        ).rowcount
    return planned


def pending(conn: Connection) -> list[Intent]:
    """Blob deletions begun and not confirmed (this run's, or an interrupted run's), in the order they were planned."""
    rows = conn.execute(
        text("""SELECT id, fleet_id, kind, subject, blob_uri FROM retention_deletions
                WHERE deleted_at IS NULL ORDER BY id""")
    )
    return [Intent(r.id, r.fleet_id, r.kind, r.subject, r.blob_uri) for r in rows]


def confirm(conn: Connection, uri: str, detail: dict[str, Any] | None = None) -> bool:
    """Mark the blob's deletion done; False when it already was (a re-run of a finished step)."""
    return bool(
        conn.execute(
            text("""UPDATE retention_deletions SET deleted_at = now(),
                           detail = detail || CAST(:detail AS jsonb)
                    WHERE blob_uri = :uri AND deleted_at IS NULL"""),
            {"uri": uri, "detail": json.dumps(detail or {})},
        ).rowcount
    )


def _log_rows(
    conn: Connection, run_id: uuid.UUID, fleet_id: str, kind: str, subject: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        text("""INSERT INTO retention_deletions (run_id, fleet_id, kind, subject, detail, deleted_at)
                VALUES (:run, :f, :kind, :subject, CAST(:detail AS jsonb), now())"""),
        {"run": run_id, "f": fleet_id, "kind": kind, "subject": subject, "detail": json.dumps(detail)},
    )


def delete_results(conn: Connection, run_id: uuid.UUID, fleet_id: str, clip_id: str) -> dict[str, int] | None:
    """Delete the clip's answers with their events, instructions, reviews and webhook deliveries, and log it, in the caller's
    transaction (the report facts follow by migration 0007's triggers); None when the clip is protected by now."""
    if protected_clips(conn, [clip_id]):
        return None
    counts: dict[str, int] = {}
    answers = "SELECT id FROM inferences WHERE clip_id = :c AND fleet_id = :f"
    for table in ("reviews", "events", "instructions"):
        counts[table] = conn.execute(
            text(f"DELETE FROM {table} WHERE fleet_id = :f AND inference_id IN ({answers})"),
            {"c": clip_id, "f": fleet_id},
        ).rowcount
    counts["inferences"] = conn.execute(
        text("DELETE FROM inferences WHERE clip_id = :c AND fleet_id = :f"), {"c": clip_id, "f": fleet_id}
    ).rowcount
    # Webhook deliveries name the clip, its vehicle and driver in their payload (migration 0020): whatever their
    # state, they go with the results, so an expired clip is never sent afterwards either.
    counts["webhook_outbox"] = conn.execute(
        text("""DELETE FROM webhook_outbox WHERE fleet_id = :f
                AND (payload->>'clip_id' = :c OR coalesce(payload->'clip_ids', '[]'::jsonb) ? :c)"""),
        {"c": clip_id, "f": fleet_id},
    ).rowcount
    _log_rows(conn, run_id, fleet_id, "results", clip_id, counts)
    return counts


def delete_clip_row(
    conn: Connection, run_id: uuid.UUID, fleet_id: str, clip_id: str
) -> dict[str, int] | None:
    """Delete the clip's row (its segment links, released holds, and links from acknowledged coaching sessions go
    with it; then its uploads' rows that no clip links and whose video is gone), and log it; None when the clip is
    protected by now, still has answers, or its frames are not confirmed deleted."""
    ready = conn.execute(
        text(f"""SELECT 1 FROM clips c WHERE c.clip_id = :c AND c.fleet_id = :f AND NOT {PROTECTED} AND {VIDEO_GONE}
                 AND NOT EXISTS (SELECT 1 FROM inferences i WHERE i.clip_id = c.clip_id)"""),
        {"c": clip_id, "f": fleet_id},
    ).first()
    if ready is None:
        return None
    segment_ids = list(
        conn.execute(
            text("SELECT segment_id FROM clip_segments WHERE clip_id = :c ORDER BY segment_id"),
            {"c": clip_id},
        ).scalars()
    )
    sessions = conn.execute(
        text("DELETE FROM coaching_session_clips WHERE clip_id = :c AND fleet_id = :f"),
        {"c": clip_id, "f": fleet_id},
    ).rowcount
    conn.execute(
        text("DELETE FROM clips WHERE clip_id = :c AND fleet_id = :f"), {"c": clip_id, "f": fleet_id}
    )
    segments = delete_unlinked_segment_rows(conn, segment_ids)
    detail = {"segments": len(segment_ids), "segment_rows": segments, "coaching_links": sessions}
    _log_rows(conn, run_id, fleet_id, "clip", clip_id, detail)
    return detail


def delete_unlinked_segment_rows(conn: Connection, segment_ids: list[str]) -> int:
    """Delete the rows of those uploads that no clip links any more and whose video is confirmed deleted."""
    return conn.execute(
        text("""DELETE FROM segments s WHERE s.segment_id = ANY(:ids)
                AND NOT EXISTS (SELECT 1 FROM clip_segments l WHERE l.segment_id = s.segment_id)
                AND EXISTS (SELECT 1 FROM retention_deletions d
                            WHERE d.blob_uri = s.video_uri AND d.deleted_at IS NOT NULL)"""),
        {"ids": segment_ids},
    ).rowcount
