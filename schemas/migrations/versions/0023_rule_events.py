"""rule events: what the telemetry rules (schemas/motion_rules.py) found in each clip, beside the model's events
(issue 19, item 3)

- rule_events: one row per harsh braking, acceleration, turn or speeding the rules found in a clip's telemetry
  (clips.telemetry, migration 0022), in the model's taxonomy (event_types), clip-relative times like events; `peak`
  in g (harsh driving) or km/h over the limit (speeding); `thresholds` the vehicle class whose published thresholds
  were applied; `clip_revision` the revision of the clip they were computed for. The worker's sink replaces a clip's
  rows whenever it writes the clip row (each newer revision, in the same transaction), so they always belong to the
  stored revision.
- They go with their clip (ON DELETE CASCADE on the fleet-bound reference, as clip_segments since 0009): retention
  deletes a clip's row once its video and answers are gone, and its rule events with it. They are computed from the
  clip row's own telemetry, so they stay exactly as long as it does.

Row-level security as every fleet table: a fleet's role (the console) reads its own; the pipeline's role writes every
fleet's (a permissive policy for that role alone, as 0011).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
PIPELINE_ROLE = "drivecoach_pipeline"  # migration 0011
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"


def upgrade() -> None:
    op.create_table(
        "rule_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("clip_revision", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.Column("peak", sa.Double(), nullable=False),
        sa.Column("thresholds", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.ForeignKeyConstraint(["type"], ["event_types.type"]),
        sa.ForeignKeyConstraint(
            ["clip_id", "fleet_id"],
            ["clips.clip_id", "clips.fleet_id"],
            name="fk_rule_events_clip_fleet",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("clip_id", "type", "start_s", name="uq_rule_events_clip_type_start"),
    )
    op.create_index(
        "ix_rule_events_fleet_clip",
        "rule_events",
        ["fleet_id", "clip_id"],
        postgresql_include=["type", "start_s", "end_s"],
    )
    op.execute("ALTER TABLE rule_events ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY fleet_isolation ON rule_events USING ({OWN_FLEET}) WITH CHECK ({OWN_FLEET})")
    op.execute(f"GRANT SELECT ON rule_events TO {GROUP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, DELETE ON rule_events TO {PIPELINE_ROLE}")
    op.execute(
        f"CREATE POLICY pipeline_writes ON rule_events TO {PIPELINE_ROLE} USING (true) WITH CHECK (true)"
    )
    op.execute(f"GRANT USAGE ON SEQUENCE rule_events_id_seq TO {PIPELINE_ROLE}")


def downgrade() -> None:
    op.drop_index("ix_rule_events_fleet_clip", table_name="rule_events")
    op.drop_table("rule_events")  # its policies and grants go with it; the sequence's too
