"""retention: per-fleet retention periods, legal holds, and the audit of what `drivecoach retention run` deleted
(issue 18, item 4; streams/retention/)

- fleet_retention: a fleet's periods in days, counted from a clip's end: `video_days` for the blobs (the cameras'
  uploads, the clip's stacked frames, the console's transcoded copies), `results_days` for the answers (inferences,
  their events, instructions and reviews; the report facts follow by 0007's triggers). NULL, and no row: kept
  forever. A clip's own row (its time, distance, segment links) goes when both have expired.
- legal_holds: a clip under a hold (released_at NULL) keeps everything; released holds stay as history until their
  clip is deleted (then they go with it).
- retention_deletions: one row per deletion, written by the job: for a blob, the intent first (`deleted_at` NULL),
  then the blob, then `deleted_at`, so an interrupted run's next run finishes exactly the deletions it began. A blob
  URI is logged at most once (a unique index), which is also how a run knows a clip's video is gone.
- drivecoach_retention: the job's NOLOGIN group role: reads what decides expiry and protection (settings, holds,
  coaching sessions, clips, segments, answers), deletes answers and rows of expired clips, and writes its own log;
  no INSERT or UPDATE on any fleet table, no DDL, no BYPASSRLS. It acts on every fleet, so each table it touches
  gets a permissive policy for this role alone (as 0011, 0012). Fleets' roles (the console) read their own
  settings, holds and log; only the owner (`drivecoach retention settings|hold|release`) writes settings and holds.

A login joins it with `drivecoach migrate --retention-login NAME` (password from DRIVECOACH_RETENTION_DB_PASSWORD).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
RETENTION_ROLE = "drivecoach_retention"
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"
NEW_TABLES = ["fleet_retention", "legal_holds", "retention_deletions"]
# what the job only reads, and what it reads and deletes (streams/retention/store.py)
RETENTION_READS = ["fleet_retention", "legal_holds", "coaching_sessions"]
RETENTION_DELETES = [
    "clips",
    "clip_segments",
    "segments",
    "inferences",
    "events",
    "instructions",
    "reviews",
    "coaching_session_clips",
]


def upgrade() -> None:
    op.create_table(
        "fleet_retention",
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("video_days", sa.Integer(), nullable=True),
        sa.Column("results_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("video_days IS NULL OR video_days >= 0", name="ck_retention_video_days"),
        sa.CheckConstraint("results_days IS NULL OR results_days >= 0", name="ck_retention_results_days"),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("fleet_id"),
    )
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("released_by", sa.String(length=200), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["clip_id", "fleet_id"],
            ["clips.clip_id", "clips.fleet_id"],
            name="fk_legal_holds_clip_fleet",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_legal_holds_active",
        "legal_holds",
        ["fleet_id", "clip_id"],
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_table(
        "retention_deletions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("blob_uri", sa.Text(), server_default="", nullable=False),
        sa.Column("detail", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('frames', 'video', 'footage', 'results', 'clip')", name="ck_retention_deletions_kind"
        ),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_retention_deletions_blob",
        "retention_deletions",
        ["blob_uri"],
        unique=True,
        postgresql_where=sa.text("blob_uri <> ''"),
    )
    op.create_index(
        "ix_retention_deletions_pending",
        "retention_deletions",
        ["id"],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_retention_deletions_fleet_at", "retention_deletions", ["fleet_id", "planned_at"])
    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY fleet_isolation ON {table} FOR SELECT TO {GROUP_ROLE} USING ({OWN_FLEET})")
        op.execute(f"GRANT SELECT ON {table} TO {GROUP_ROLE}")

    op.execute(f"""DO $$ BEGIN CREATE ROLE {RETENTION_ROLE} NOLOGIN NOBYPASSRLS;
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""")
    for table in RETENTION_READS:
        op.execute(f"GRANT SELECT ON {table} TO {RETENTION_ROLE}")
        op.execute(f"CREATE POLICY retention_job ON {table} FOR SELECT TO {RETENTION_ROLE} USING (true)")
    for table in RETENTION_DELETES:  # row-level security is on for each (migrations 0004, 0016)
        op.execute(f"GRANT SELECT, DELETE ON {table} TO {RETENTION_ROLE}")
        op.execute(
            f"CREATE POLICY retention_job ON {table} TO {RETENTION_ROLE} USING (true) WITH CHECK (false)"
        )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON retention_deletions TO {RETENTION_ROLE}")
    op.execute(
        f"CREATE POLICY retention_job ON retention_deletions TO {RETENTION_ROLE} USING (true) WITH CHECK (true)"
    )
    op.execute(f"GRANT USAGE ON SEQUENCE retention_deletions_id_seq TO {RETENTION_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE USAGE ON SEQUENCE retention_deletions_id_seq FROM {RETENTION_ROLE}")
    for table in RETENTION_READS + RETENTION_DELETES:
        if table not in NEW_TABLES:  # theirs go with them
            op.execute(f"DROP POLICY retention_job ON {table}")
            op.execute(f"REVOKE ALL ON {table} FROM {RETENTION_ROLE}")
    op.drop_table("retention_deletions")
    op.drop_table("legal_holds")
    op.drop_table("fleet_retention")
    # The role is cluster-wide and may serve other databases of this cluster: it stays, with nothing granted here.
