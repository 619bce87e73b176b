"""initial schema: fleets to training runs

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleets",
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("fleet_id"),
    )
    op.create_table(
        "drivers",
        sa.Column("driver_id", sa.String(length=64), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.PrimaryKeyConstraint("driver_id"),
    )
    op.create_index(op.f("ix_drivers_fleet_id"), "drivers", ["fleet_id"], unique=False)
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("demo", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index(op.f("ix_model_versions_fleet_id"), "model_versions", ["fleet_id"], unique=False)
    op.create_table(
        "vehicles",
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.PrimaryKeyConstraint("vehicle_id"),
    )
    op.create_index(op.f("ix_vehicles_fleet_id"), "vehicles", ["fleet_id"], unique=False)
    op.create_table(
        "clips",
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("driver_id", sa.String(length=64), nullable=True),
        sa.Column("start_ts", sa.Double(), nullable=False),
        sa.Column("end_ts", sa.Double(), nullable=False),
        sa.Column("views", sa.JSON(), nullable=False),
        sa.Column("frames_uri", sa.Text(), nullable=False),
        sa.Column("num_frames", sa.Integer(), nullable=False),
        sa.Column("frame_width", sa.Integer(), nullable=False),
        sa.Column("frame_height", sa.Integer(), nullable=False),
        sa.Column("sample_fps", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["driver_id"],
            ["drivers.driver_id"],
        ),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.vehicle_id"],
        ),
        sa.PrimaryKeyConstraint("clip_id"),
    )
    op.create_index(op.f("ix_clips_driver_id"), "clips", ["driver_id"], unique=False)
    op.create_index(op.f("ix_clips_fleet_id"), "clips", ["fleet_id"], unique=False)
    op.create_index(op.f("ix_clips_vehicle_id"), "clips", ["vehicle_id"], unique=False)
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.String(length=128), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("camera", sa.String(length=16), nullable=False),
        sa.Column("start_ts", sa.Double(), nullable=False),
        sa.Column("end_ts", sa.Double(), nullable=False),
        sa.Column("video_uri", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.vehicle_id"],
        ),
        sa.PrimaryKeyConstraint("segment_id"),
    )
    op.create_index(op.f("ix_segments_fleet_id"), "segments", ["fleet_id"], unique=False)
    op.create_index(op.f("ix_segments_vehicle_id"), "segments", ["vehicle_id"], unique=False)
    op.create_table(
        "training_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["model_versions.version"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_training_runs_fleet_id"), "training_runs", ["fleet_id"], unique=False)
    op.create_table(
        "clip_segments",
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=128), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["clip_id"], ["clips.clip_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.segment_id"],
        ),
        sa.PrimaryKeyConstraint("clip_id", "segment_id"),
    )
    op.create_index(op.f("ix_clip_segments_fleet_id"), "clip_segments", ["fleet_id"], unique=False)
    op.create_table(
        "inferences",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("prompt_version", sa.String(length=32), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("raw_turn1", sa.Text(), nullable=False),
        sa.Column("raw_turn2", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("generated_tokens", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["clip_id"],
            ["clips.clip_id"],
        ),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["model_versions.version"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("clip_id", "model_version", name="uq_inference_clip_model"),
    )
    op.create_index(op.f("ix_inferences_clip_id"), "inferences", ["clip_id"], unique=False)
    op.create_index(op.f("ix_inferences_fleet_id"), "inferences", ["fleet_id"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("inference_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("view", sa.String(length=16), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(["inference_id"], ["inferences.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_events_fleet_id"), "events", ["fleet_id"], unique=False)
    op.create_index(op.f("ix_events_inference_id"), "events", ["inference_id"], unique=False)
    op.create_index(op.f("ix_events_type"), "events", ["type"], unique=False)
    op.create_table(
        "instructions",
        sa.Column("inference_id", sa.BigInteger(), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(["inference_id"], ["inferences.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inference_id"),
    )
    op.create_index(op.f("ix_instructions_fleet_id"), "instructions", ["fleet_id"], unique=False)
    op.create_table(
        "reviews",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("inference_id", sa.BigInteger(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("corrected_turn1", sa.Text(), nullable=True),
        sa.Column("corrected_instruction", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.fleet_id"],
        ),
        sa.ForeignKeyConstraint(
            ["inference_id"],
            ["inferences.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_reviews_fleet_id"), "reviews", ["fleet_id"], unique=False)
    op.create_index(op.f("ix_reviews_inference_id"), "reviews", ["inference_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reviews_inference_id"), table_name="reviews")
    op.drop_index(op.f("ix_reviews_fleet_id"), table_name="reviews")
    op.drop_table("reviews")
    op.drop_index(op.f("ix_instructions_fleet_id"), table_name="instructions")
    op.drop_table("instructions")
    op.drop_index(op.f("ix_events_type"), table_name="events")
    op.drop_index(op.f("ix_events_inference_id"), table_name="events")
    op.drop_index(op.f("ix_events_fleet_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_inferences_fleet_id"), table_name="inferences")
    op.drop_index(op.f("ix_inferences_clip_id"), table_name="inferences")
    op.drop_table("inferences")
    op.drop_index(op.f("ix_clip_segments_fleet_id"), table_name="clip_segments")
    op.drop_table("clip_segments")
    op.drop_index(op.f("ix_training_runs_fleet_id"), table_name="training_runs")
    op.drop_table("training_runs")
    op.drop_index(op.f("ix_segments_vehicle_id"), table_name="segments")
    op.drop_index(op.f("ix_segments_fleet_id"), table_name="segments")
    op.drop_table("segments")
    op.drop_index(op.f("ix_clips_vehicle_id"), table_name="clips")
    op.drop_index(op.f("ix_clips_fleet_id"), table_name="clips")
    op.drop_index(op.f("ix_clips_driver_id"), table_name="clips")
    op.drop_table("clips")
    op.drop_index(op.f("ix_vehicles_fleet_id"), table_name="vehicles")
    op.drop_table("vehicles")
    op.drop_index(op.f("ix_model_versions_fleet_id"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_drivers_fleet_id"), table_name="drivers")
    op.drop_table("drivers")
    op.drop_table("fleets")
