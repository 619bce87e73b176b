"""distance: segments.distance_km (from telemetry) and km in report_driving, for rates per 100 km

report_driving keeps its columns and their meaning (seconds: the clips' durations) and adds:
- km: kilometres driven in those clips, NULL unless every clip of the row has a known distance (a partial sum
  would inflate events per 100 km);
- km_seconds: the driving seconds whose distance is known (equals seconds when km is not NULL), to see coverage.

A clip's distance comes from one camera's segments, so a distance both cameras carry counts once: the road
camera's, else the driver camera's, each only when every segment of that camera in the clip has a distance. A
segment that reaches beyond the clip counts in proportion to its overlap with the clip, so a segment split over
two clips is not counted twice.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

REPORT_DRIVING = """
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

REPORT_DRIVING_0002 = """
        SELECT c.fleet_id, c.vehicle_id, c.driver_id, (to_timestamp(c.start_ts) AT TIME ZONE 'UTC')::date AS day,
               sum(c.end_ts - c.start_ts) AS seconds
        FROM clips c
        GROUP BY 1, 2, 3, 4"""


def upgrade() -> None:
    op.add_column("segments", sa.Column("distance_km", sa.Double(), nullable=True))
    op.execute("DROP VIEW IF EXISTS report_driving")
    op.execute(f"CREATE VIEW report_driving AS {REPORT_DRIVING}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS report_driving")
    op.execute(f"CREATE VIEW report_driving AS {REPORT_DRIVING_0002}")
    op.drop_column("segments", "distance_km")
