"""report indexes: the report views stay fast at a million events

`drivecoach bench reports` (docs/benchmarks.md) times every query the console and `drivecoach report` run, under a
fleet's role, on a million generated events. What made them slow, and what this migration does about it:

- A fleet's rows lie scattered over the heap (rows arrive in time order from every fleet), and every query of a
  fleet role carries the row-level security filter `fleet_id = <the role's fleet>` on every table (0004). The new
  indexes lead with fleet_id and INCLUDE the columns the views read, so a fleet's rows are one slice of an index,
  read without visiting the heap (index-only scans).
- current_inferences keeps its DISTINCT ON; ix_inferences_fleet_current hands it a fleet's answers already in its
  order (no sort of every answer), and ix_inferences_clip_current does the same without the fleet filter (the table
  owner, or one clip).
- report_events: `day` was an expression over two tables (clip start + event offset), so a window filter on it
  could not narrow anything before the joins and every report read the fleet's whole history. The view is now the
  UNION ALL of three disjoint parts that give the same rows: events within the first hour of their clip on the
  clip's day (nearly all), the same on the next day (only a clip starting after 22:00 UTC can have those), and
  every other offset (a partial index, normally empty) with the original expression. In the first two `day` depends
  on the clip alone, so a window filter reaches the clips before any event is read.
- report_driving: the per-clip distance is a one-row aggregate, which Postgres removes when a query reads no km
  (the newest day, driving hours). Segments carry two cameras, road and driver: the road camera's distance, else
  the other camera's, as before.
- review_queue: the events of each answer are counted in a lateral aggregate (no sort of every event of the fleet),
  and reviewed answers are found through a DISTINCT subquery, which Postgres hashes once. Under row-level security
  the planner's row estimates for a fleet's joins are far too low (it cannot know every table is cut to the same
  fleet), and with a plain NOT EXISTS it probes the reviews' index once per answer instead.

Every view keeps its columns, its rows, `security_invoker = true` and its grant to drivecoach_console.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"
FIRST_HOUR = (
    "start_s >= 0 AND start_s < 3600"  # an event within the first hour of its clip (clips last a minute)
)
UNUSUAL_OFFSET = f"NOT ({FIRST_HOUR})"

# name, table, key columns, INCLUDE columns, partial-index predicate
INDEXES: list[tuple[str, str, list[str], list[str], str | None]] = [
    (
        "ix_events_fleet_inference",
        "events",
        ["fleet_id", "inference_id"],
        ["id", "type", "start_s", "coaching_status"],
        None,
    ),
    ("ix_events_fleet_unusual_offset", "events", ["fleet_id"], [], UNUSUAL_OFFSET),
    (
        "ix_inferences_fleet_current",
        "inferences",
        ["fleet_id", "clip_id", "updated_at DESC", "id DESC"],
        ["model_version"],
        None,
    ),
    (
        "ix_inferences_clip_current",
        "inferences",
        ["clip_id", "updated_at DESC", "id DESC"],
        ["model_version"],
        None,
    ),
    (
        "ix_clips_fleet_start",
        "clips",
        ["fleet_id", "start_ts"],
        ["clip_id", "vehicle_id", "driver_id", "end_ts"],
        None,
    ),
    ("ix_clip_segments_fleet_clip", "clip_segments", ["fleet_id", "clip_id"], ["segment_id"], None),
    (
        "ix_segments_fleet_segment",
        "segments",
        ["fleet_id", "segment_id"],
        ["camera", "start_ts", "end_ts", "distance_km"],
        None,
    ),
    ("ix_reviews_fleet_inference", "reviews", ["fleet_id", "inference_id"], [], None),
]
REPLACED_0002 = [  # superseded by the index of the same name or by ix_inferences_clip_current
    ("ix_clips_fleet_start", "clips", ["fleet_id", "start_ts"]),
    ("ix_inferences_clip_updated", "inferences", ["clip_id", "updated_at"]),
]

CLIP_DAY = "(to_timestamp(c.start_ts) AT TIME ZONE 'UTC')::date"
EVENT_DAY = "(to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date"


def _report_events_part(day: str, where: str) -> str:
    return f"""
    SELECT e.id AS event_id, e.fleet_id, c.vehicle_id, c.driver_id, c.clip_id, i.id AS inference_id,
           i.model_version, e.type, t.severity, e.view, e.coaching_status,
           to_timestamp(c.start_ts + e.start_s) AS occurred_at,
           {day} AS day,
           date_trunc('week', to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date AS week
    FROM events e
    JOIN current_inferences i ON i.id = e.inference_id
    JOIN clips c ON c.clip_id = i.clip_id
    JOIN event_types t ON t.type = e.type
    WHERE {where}"""


# An event within the first hour of its clip happens on the clip's day or the next, and on the next only if the clip
# starts after 23:00 UTC (22:00 leaves a margin for rounding): the first two parts' `day` is the clip's.
IN_FIRST_HOUR = FIRST_HOUR.replace("start_s", "e.start_s")
REPORT_EVENTS = "\n    UNION ALL".join(
    [
        _report_events_part(CLIP_DAY, f"{IN_FIRST_HOUR}\n      AND {EVENT_DAY} = {CLIP_DAY}"),
        _report_events_part(
            f"{CLIP_DAY} + 1",
            f"""{IN_FIRST_HOUR}
      AND to_timestamp(c.start_ts) AT TIME ZONE 'UTC' >= {CLIP_DAY} + interval '22 hours'
      AND {EVENT_DAY} = {CLIP_DAY} + 1""",
        ),
        _report_events_part(EVENT_DAY, f"NOT ({IN_FIRST_HOUR})"),
    ]
)

REPORT_DRIVING = """
    SELECT c.fleet_id, c.vehicle_id, c.driver_id, (to_timestamp(c.start_ts) AT TIME ZONE 'UTC')::date AS day,
           sum(c.end_ts - c.start_ts) AS seconds,
           CASE WHEN count(k.km) = count(*) THEN sum(k.km) END AS km,
           coalesce(sum(c.end_ts - c.start_ts) FILTER (WHERE k.km IS NOT NULL), 0) AS km_seconds
    FROM clips c
    LEFT JOIN LATERAL (  -- one row per clip, dropped by the planner when no km is read: the road camera's distance
                         -- if all its segments have one, else the other camera's (each segment by its overlap)
        SELECT coalesce(CASE WHEN bool_and(s.known) FILTER (WHERE s.road) THEN sum(s.km) FILTER (WHERE s.road) END,
                        CASE WHEN bool_and(s.known) FILTER (WHERE NOT s.road)
                             THEN sum(s.km) FILTER (WHERE NOT s.road) END) AS km
        FROM clip_segments cs
        CROSS JOIN LATERAL (
            SELECT s.camera = 'road' AS road, s.distance_km IS NOT NULL AND s.end_ts > s.start_ts AS known,
                   s.distance_km * greatest(least(c.end_ts, s.end_ts) - greatest(c.start_ts, s.start_ts), 0)
                   / nullif(s.end_ts - s.start_ts, 0) AS km
            FROM segments s WHERE s.segment_id = cs.segment_id) s
        WHERE cs.clip_id = c.clip_id) k ON TRUE
    GROUP BY 1, 2, 3, 4"""

REVIEW_QUEUE = """
    SELECT i.id AS inference_id, i.clip_id, c.fleet_id, c.vehicle_id, c.driver_id, i.model_version,
           to_timestamp(c.start_ts) AS occurred_at, ev.events, ev.max_severity
    FROM current_inferences i
    JOIN clips c ON c.clip_id = i.clip_id
    CROSS JOIN LATERAL (SELECT count(e.id) AS events, coalesce(max(t.severity), 0) AS max_severity
                        FROM events e LEFT JOIN event_types t ON t.type = e.type
                        WHERE e.inference_id = i.id) ev
    WHERE NOT EXISTS (SELECT 1 FROM (SELECT DISTINCT inference_id FROM reviews) r WHERE r.inference_id = i.id)"""

# The definitions this migration replaces (0002's report_events and review_queue, 0003's report_driving), for the
# downgrade.
REPORT_EVENTS_0002 = """
        SELECT e.id AS event_id, e.fleet_id, c.vehicle_id, c.driver_id, c.clip_id, i.id AS inference_id,
               i.model_version, e.type, t.severity, e.view, e.coaching_status,
               to_timestamp(c.start_ts + e.start_s) AS occurred_at,
               (to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date AS day,
               date_trunc('week', to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date AS week
        FROM events e
        JOIN current_inferences i ON i.id = e.inference_id
        JOIN clips c ON c.clip_id = i.clip_id
        JOIN event_types t ON t.type = e.type"""
REPORT_DRIVING_0003 = """
    SELECT c.fleet_id, c.vehicle_id, c.driver_id, (to_timestamp(c.start_ts) AT TIME ZONE 'UTC')::date AS day,
           sum(c.end_ts - c.start_ts) AS seconds,
           CASE WHEN count(k.km) = count(*) THEN sum(k.km) END AS km,
           coalesce(sum(c.end_ts - c.start_ts) FILTER (WHERE k.km IS NOT NULL), 0) AS km_seconds
    FROM clips c
    LEFT JOIN LATERAL (  -- per clip (filters on clips reach the index): one camera's segments, road first
        SELECT sum(s.distance_km * greatest(least(c.end_ts, s.end_ts) - greatest(c.start_ts, s.start_ts), 0)
                   / nullif(s.end_ts - s.start_ts, 0)) AS km
        FROM clip_segments cs
        JOIN segments s ON s.segment_id = cs.segment_id
        WHERE cs.clip_id = c.clip_id
        GROUP BY s.camera
        HAVING bool_and(s.distance_km IS NOT NULL AND s.end_ts > s.start_ts)
        ORDER BY s.camera = 'road' DESC
        LIMIT 1) k ON TRUE
    GROUP BY 1, 2, 3, 4"""
REVIEW_QUEUE_0002 = """
        SELECT i.id AS inference_id, i.clip_id, c.fleet_id, c.vehicle_id, c.driver_id, i.model_version,
               to_timestamp(c.start_ts) AS occurred_at, count(e.id) AS events,
               coalesce(max(t.severity), 0) AS max_severity
        FROM current_inferences i
        JOIN clips c ON c.clip_id = i.clip_id
        LEFT JOIN events e ON e.inference_id = i.id
        LEFT JOIN event_types t ON t.type = e.type
        WHERE NOT EXISTS (SELECT 1 FROM reviews r WHERE r.inference_id = i.id)
        GROUP BY i.id, i.clip_id, c.fleet_id, c.vehicle_id, c.driver_id, i.model_version, c.start_ts"""


def _replace_views(views: dict[str, str]) -> None:
    for name, body in views.items():  # same columns: dependants and grants stay; restated to be explicit
        op.execute(f"CREATE OR REPLACE VIEW {name} WITH (security_invoker = true) AS {body}")
        op.execute(f"GRANT SELECT ON {name} TO {GROUP_ROLE}")


def upgrade() -> None:
    for name, table, _ in REPLACED_0002:
        op.drop_index(name, table_name=table)
    for name, table, columns, include, where in INDEXES:
        op.create_index(
            name,
            table,
            [sa.text(c) if " " in c else c for c in columns],
            postgresql_include=include,
            postgresql_where=sa.text(where) if where else None,
        )
    _replace_views(
        {"report_events": REPORT_EVENTS, "report_driving": REPORT_DRIVING, "review_queue": REVIEW_QUEUE}
    )


def downgrade() -> None:
    _replace_views(
        {
            "report_events": REPORT_EVENTS_0002,
            "report_driving": REPORT_DRIVING_0003,
            "review_queue": REVIEW_QUEUE_0002,
        }
    )
    for name, table, *_ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for name, table, columns in REPLACED_0002:
        op.create_index(name, table, columns)
