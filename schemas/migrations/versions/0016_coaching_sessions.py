"""coaching sessions: a manager assigns a driver a coaching session on some of their clips; the driver opens a signed,
expiring link (no account), sees the clips, events and instructions, and acknowledges (issue 18, item 2)

- coaching_sessions: one per assignment (driver, coach, due day, notes, who assigned it, when the driver
  acknowledged); `public_id` is what links and pages name.
- coaching_session_clips: the clips a session covers, bound to the session's fleet like every reference since 0009.
- console_link_keys: the secret the console signs drivers' links with, made here at random (so every console
  replica of this database signs and checks alike); only the console's login and the owner read it.

Row-level security as every fleet table; a fleet's role (the console, under the manager's fleet) creates sessions
and records acknowledgements.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
WEB_ROLE = "drivecoach_web"  # migration 0011
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"


def upgrade() -> None:
    op.create_table(
        "coaching_sessions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("public_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("driver_id", sa.String(length=64), nullable=False),
        sa.Column("coach", sa.String(length=200), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.ForeignKeyConstraint(["driver_id"], ["drivers.driver_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_id", name="uq_coaching_sessions_public_id"),
        sa.UniqueConstraint("id", "fleet_id", name="uq_coaching_sessions_id_fleet"),
    )
    op.create_index("ix_coaching_sessions_fleet_due", "coaching_sessions", ["fleet_id", "due_on"])
    op.create_table(
        "coaching_session_clips",
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id", "fleet_id"],
            ["coaching_sessions.id", "coaching_sessions.fleet_id"],
            name="fk_session_clips_session_fleet",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["clip_id", "fleet_id"], ["clips.clip_id", "clips.fleet_id"], name="fk_session_clips_clip_fleet"
        ),
        sa.PrimaryKeyConstraint("session_id", "clip_id"),
    )
    op.create_table(
        "console_link_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # 256 bits from two random UUIDs' 244, hashed: Postgres 13+ has gen_random_uuid without pgcrypto.
    op.execute(
        "INSERT INTO console_link_keys (id, secret) VALUES "
        "(1, encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'))"
    )
    for table in ("coaching_sessions", "coaching_session_clips"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY fleet_isolation ON {table} USING ({OWN_FLEET}) WITH CHECK ({OWN_FLEET})")
        op.execute(f"GRANT SELECT, INSERT ON {table} TO {GROUP_ROLE}")
    op.execute(f"GRANT UPDATE (acknowledged_at) ON coaching_sessions TO {GROUP_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE coaching_sessions_id_seq TO {GROUP_ROLE}")
    op.execute(f"""DO $$ BEGIN
                   IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WEB_ROLE}') THEN
                       GRANT SELECT ON console_link_keys TO {WEB_ROLE};
                   END IF; END $$""")


def downgrade() -> None:
    op.drop_table("console_link_keys")
    op.drop_table("coaching_session_clips")
    op.drop_table("coaching_sessions")
