"""reports: the taxonomy table, coaching status per event, report views and their indexes

Views (the README shows queries over them):
- current_inferences: the latest inference per clip (a clip re-inferred by a new model version counts once);
- report_events: one row per detected event with fleet, vehicle, driver, time, day, week, type, severity and
  coaching status;
- report_driving: driving seconds per fleet, vehicle, driver and day (the clips' durations), for rates per hour;
- review_queue: inferences nobody has reviewed yet, with their most severe event (order by max_severity desc,
  occurred_at desc).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEED = [  # the taxonomy as of cot-v1, frozen here: a later taxonomy change gets its own migration
    (
        "following_distance",
        "road",
        2,
        "The vehicle ahead is closer than a two-second gap for several seconds.",
    ),
    (
        "forward_collision_risk",
        "road",
        3,
        "The gap to the vehicle ahead closes quickly enough that a collision is imminent.",
    ),
    ("harsh_braking", "road", 2, "Deceleration well beyond normal driving, usually a late reaction."),
    ("harsh_acceleration", "road", 1, "Acceleration well beyond normal driving."),
    ("harsh_turn", "road", 2, "Cornering at a speed that produces high lateral acceleration."),
    ("lane_departure", "road", 2, "The vehicle drifts across a lane line without signalling."),
    ("rolling_stop", "road", 3, "The vehicle passes a stop sign without coming to a full stop."),
    ("speeding", "road", 2, "Driving above the posted or safe speed for the road."),
    ("phone_use", "driver", 3, "The driver holds or talks on a handheld phone while driving."),
    (
        "distraction",
        "driver",
        2,
        "The driver's eyes or head are turned away from the road for more than two seconds.",
    ),
    ("drowsiness", "driver", 3, "The driver's eyes stay closed or the head nods, signs of fatigue."),
    ("no_seatbelt", "driver", 2, "The driver is not wearing a seatbelt."),
    ("eating_drinking", "driver", 1, "The driver eats or drinks while driving."),
    ("smoking", "driver", 1, "The driver smokes while driving."),
    ("camera_obstructed", "driver", 2, "A camera is covered or blacked out so the scene cannot be seen."),
]

VIEWS = {
    "current_inferences": """
        SELECT DISTINCT ON (i.clip_id) i.*
        FROM inferences i
        ORDER BY i.clip_id, i.updated_at DESC, i.id DESC""",
    "report_events": """
        SELECT e.id AS event_id, e.fleet_id, c.vehicle_id, c.driver_id, c.clip_id, i.id AS inference_id,
               i.model_version, e.type, t.severity, e.view, e.coaching_status,
               to_timestamp(c.start_ts + e.start_s) AS occurred_at,
               (to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date AS day,
               date_trunc('week', to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date AS week
        FROM events e
        JOIN current_inferences i ON i.id = e.inference_id
        JOIN clips c ON c.clip_id = i.clip_id
        JOIN event_types t ON t.type = e.type""",
    "report_driving": """
        SELECT c.fleet_id, c.vehicle_id, c.driver_id, (to_timestamp(c.start_ts) AT TIME ZONE 'UTC')::date AS day,
               sum(c.end_ts - c.start_ts) AS seconds
        FROM clips c
        GROUP BY 1, 2, 3, 4""",
    "review_queue": """
        SELECT i.id AS inference_id, i.clip_id, c.fleet_id, c.vehicle_id, c.driver_id, i.model_version,
               to_timestamp(c.start_ts) AS occurred_at, count(e.id) AS events,
               coalesce(max(t.severity), 0) AS max_severity
        FROM current_inferences i
        JOIN clips c ON c.clip_id = i.clip_id
        LEFT JOIN events e ON e.inference_id = i.id
        LEFT JOIN event_types t ON t.type = e.type
        WHERE NOT EXISTS (SELECT 1 FROM reviews r WHERE r.inference_id = i.id)
        GROUP BY i.id, i.clip_id, c.fleet_id, c.vehicle_id, c.driver_id, i.model_version, c.start_ts""",
}


def upgrade() -> None:
    event_types = op.create_table(
        "event_types",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("view", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("type"),
    )
    op.bulk_insert(
        event_types, [dict(zip(("type", "view", "severity", "definition"), row, strict=True)) for row in SEED]
    )
    op.add_column(
        "events",
        sa.Column("coaching_status", sa.String(length=16), server_default="needs_review", nullable=False),
    )
    op.create_index("ix_events_fleet_status", "events", ["fleet_id", "coaching_status"], unique=False)
    op.create_index("ix_clips_fleet_start", "clips", ["fleet_id", "start_ts"], unique=False)
    op.create_index("ix_clips_vehicle_start", "clips", ["vehicle_id", "start_ts"], unique=False)
    op.create_index("ix_inferences_clip_updated", "inferences", ["clip_id", "updated_at"], unique=False)
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index("ix_inferences_clip_updated", table_name="inferences")
    op.drop_index("ix_clips_vehicle_start", table_name="clips")
    op.drop_index("ix_clips_fleet_start", table_name="clips")
    op.drop_index("ix_events_fleet_status", table_name="events")
    op.drop_column("events", "coaching_status")
    op.drop_table("event_types")
