"""console: safety managers, their sessions, and row-level security per fleet

- managers: one sign-in per safety manager, bound to one fleet (argon2 password hash, never the password);
- console_sessions: server-side sessions (only a SHA-256 of the cookie token is stored) with their CSRF token;
- fleet_roles: the Postgres role of each fleet. The console and `drivecoach report` run every query after
  `SET LOCAL ROLE <the fleet's role>`; the policies below compare each row's fleet_id with the fleet of
  `current_user`, so a query that forgets its fleet filter still sees only that fleet's rows;
- drivecoach_console: the NOLOGIN group role that holds the grants every fleet role inherits (read the fleet's
  rows; write reviews, coaching status and corrected events). It neither owns the tables nor bypasses RLS;
- the report views become `security_invoker`, so they are read with the caller's rights (and policies), not the
  owner's.

Roles are cluster-wide: they are created if missing and left in place on downgrade (other databases on the same
server may use them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"
FLEET_TABLES = [
    "fleets",
    "vehicles",
    "drivers",
    "segments",
    "clips",
    "clip_segments",
    "inferences",
    "events",
    "instructions",
    "reviews",
]
SHARED_TABLES = ["model_versions", "training_runs"]  # fleet_id NULL: a row for all fleets
VIEWS = ["current_inferences", "report_events", "report_driving", "review_queue"]


def upgrade() -> None:
    op.create_table(
        "managers",
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("username"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["username"], ["managers.username"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_console_sessions_username", "console_sessions", ["username"])
    op.create_table(
        "fleet_roles",
        sa.Column("role_name", sa.String(length=63), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("role_name"),
        sa.UniqueConstraint("fleet_id"),
    )
    op.execute(f"""DO $$ BEGIN CREATE ROLE {GROUP_ROLE} NOLOGIN NOBYPASSRLS;
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""")
    # A role reads only its own line of fleet_roles. The function runs with the caller's rights on purpose: inside
    # a SECURITY DEFINER function current_user would be the owner. Policies call it once per query (a subselect).
    op.execute("ALTER TABLE fleet_roles ENABLE ROW LEVEL SECURITY")
    op.execute("CREATE POLICY own_role ON fleet_roles USING (role_name = current_user)")
    op.execute(f"GRANT SELECT ON fleet_roles TO {GROUP_ROLE}")
    op.execute("""CREATE FUNCTION drivecoach_current_fleet() RETURNS text LANGUAGE sql STABLE
                  AS $$ SELECT fleet_id FROM fleet_roles WHERE role_name = current_user $$""")
    op.execute(f"GRANT EXECUTE ON FUNCTION drivecoach_current_fleet() TO {GROUP_ROLE}")
    own_fleet = "fleet_id = (SELECT drivecoach_current_fleet())"
    for table in FLEET_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY fleet_isolation ON {table} USING ({own_fleet}) WITH CHECK ({own_fleet})")
        op.execute(f"GRANT SELECT ON {table} TO {GROUP_ROLE}")
    for table in SHARED_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY fleet_isolation ON {table} USING (fleet_id IS NULL OR {own_fleet})")
        op.execute(f"GRANT SELECT ON {table} TO {GROUP_ROLE}")
    op.execute(f"GRANT SELECT ON event_types TO {GROUP_ROLE}")
    op.execute(f"GRANT INSERT ON reviews TO {GROUP_ROLE}")
    op.execute(f"GRANT INSERT, DELETE, UPDATE (coaching_status) ON events TO {GROUP_ROLE}")
    op.execute(f"GRANT INSERT, UPDATE (text) ON instructions TO {GROUP_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE reviews_id_seq, events_id_seq TO {GROUP_ROLE}")
    for view in VIEWS:
        op.execute(f"ALTER VIEW {view} SET (security_invoker = true)")
        op.execute(f"GRANT SELECT ON {view} TO {GROUP_ROLE}")


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"REVOKE ALL ON {view} FROM {GROUP_ROLE}")
        op.execute(f"ALTER VIEW {view} RESET (security_invoker)")
    for table in [*FLEET_TABLES, *SHARED_TABLES, "event_types", "fleet_roles"]:
        op.execute(f"DROP POLICY IF EXISTS fleet_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {GROUP_ROLE}")
    op.execute(f"REVOKE ALL ON SEQUENCE reviews_id_seq, events_id_seq FROM {GROUP_ROLE}")
    op.execute("DROP FUNCTION drivecoach_current_fleet()")
    op.drop_table("fleet_roles")
    op.drop_index("ix_console_sessions_username", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("managers")
