"""clip telemetry: clips.telemetry, the vehicle's motion during the clip (issue 19)

JSONB list of telemetry samples (t in seconds from the clip start, speed_kmh, accel_ms2, yaw_rate_dps, lat, lon,
speed_limit_kmh; absent keys are missing readings), written by the worker's sink with the clip row. NULL for clips
stored before telemetry travelled through the join; readers treat NULL as no telemetry.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clips", sa.Column("telemetry", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("clips", "telemetry")
