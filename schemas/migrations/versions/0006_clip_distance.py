"""clip distance: each clip's kilometres stored on the clip, so report_driving sums a column

`drivecoach bench reports` found half of `event_rates`' time at a million events in report_driving's per-clip
distance: three index lookups per clip (clip_segments, segments, per camera) on every report. The sink now writes
`clips.distance_km` (schemas.distance.clip_distance_km: the road camera's segments when all have a distance, else
the driver camera's, each by its overlap with the clip), this migration fills it for the clips already stored with
the same rule in SQL, and report_driving reads it. The view keeps its columns and rows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"
CLIP_COLUMNS = ["clip_id", "vehicle_id", "driver_id", "end_ts"]

# The rule of schemas.distance.clip_distance_km, for the clips written before the sink stored it.
BACKFILL = """
    UPDATE clips c SET distance_km = k.km
    FROM (SELECT c2.clip_id,
                 coalesce(CASE WHEN bool_and(s.known) FILTER (WHERE s.road) THEN sum(s.km) FILTER (WHERE s.road) END,
                          CASE WHEN bool_and(s.known) FILTER (WHERE NOT s.road)
                               THEN sum(s.km) FILTER (WHERE NOT s.road) END) AS km
          FROM clips c2
          JOIN clip_segments cs ON cs.clip_id = c2.clip_id
          CROSS JOIN LATERAL (
              SELECT s.camera = 'road' AS road, s.distance_km IS NOT NULL AND s.end_ts > s.start_ts AS known,
                     s.distance_km * greatest(least(c2.end_ts, s.end_ts) - greatest(c2.start_ts, s.start_ts), 0)
                     / nullif(s.end_ts - s.start_ts, 0) AS km
              FROM segments s WHERE s.segment_id = cs.segment_id) s
          GROUP BY c2.clip_id) k
    WHERE k.clip_id = c.clip_id AND k.km IS NOT NULL"""

REPORT_DRIVING = """
    SELECT c.fleet_id, c.vehicle_id, c.driver_id, (to_timestamp(c.start_ts) AT TIME ZONE 'UTC')::date AS day,
           sum(c.end_ts - c.start_ts) AS seconds,
           CASE WHEN count(c.distance_km) = count(*) THEN sum(c.distance_km) END AS km,
           coalesce(sum(c.end_ts - c.start_ts) FILTER (WHERE c.distance_km IS NOT NULL), 0) AS km_seconds
    FROM clips c
    GROUP BY 1, 2, 3, 4"""


def _report_driving(body: str) -> None:
    op.execute(f"CREATE OR REPLACE VIEW report_driving WITH (security_invoker = true) AS {body}")
    op.execute(f"GRANT SELECT ON report_driving TO {GROUP_ROLE}")


def _clips_index(include: list[str]) -> None:
    op.drop_index("ix_clips_fleet_start", table_name="clips")
    op.create_index("ix_clips_fleet_start", "clips", ["fleet_id", "start_ts"], postgresql_include=include)


def upgrade() -> None:
    op.add_column("clips", sa.Column("distance_km", sa.Double(), nullable=True))
    op.execute(BACKFILL)
    _clips_index([*CLIP_COLUMNS, "distance_km"])  # report_driving of a fleet's window: an index-only scan
    _report_driving(REPORT_DRIVING)


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("schemas.migrations.versions.0005_report_indexes")
    _report_driving(previous.REPORT_DRIVING)
    _clips_index(CLIP_COLUMNS)
    op.drop_column("clips", "distance_km")
