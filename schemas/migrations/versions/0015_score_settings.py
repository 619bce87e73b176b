"""score settings: a fleet's own weights and penalties for the driver safety score (issue 18)

The formula is streams/console/safety_score.py's; a fleet without a row here gets its defaults. Row-level security
as every fleet table: a fleet's role reads its own row (the console computes scores under it); the owner writes
(`drivecoach console score-settings`).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"


def upgrade() -> None:
    op.create_table(
        "fleet_score_settings",
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("weights", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("penalty_per_100km", sa.Double(), nullable=True),
        sa.Column("penalty_per_hour", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("fleet_id"),
        sa.CheckConstraint("jsonb_typeof(weights) = 'object'", name="ck_score_weights_object"),
        sa.CheckConstraint(
            "penalty_per_100km IS NULL OR penalty_per_100km >= 0", name="ck_score_penalty_100km"
        ),
        sa.CheckConstraint("penalty_per_hour IS NULL OR penalty_per_hour >= 0", name="ck_score_penalty_hour"),
    )
    op.execute("ALTER TABLE fleet_score_settings ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY fleet_isolation ON fleet_score_settings USING ({OWN_FLEET}) WITH CHECK ({OWN_FLEET})")
    op.execute(f"GRANT SELECT ON fleet_score_settings TO {GROUP_ROLE}")


def downgrade() -> None:
    op.drop_table("fleet_score_settings")
