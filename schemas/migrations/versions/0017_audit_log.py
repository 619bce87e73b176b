"""audit log: what managers did (sign-in, review, coaching, and, as they come, export and unblurred views), readable
in the console by the fleet's admins only (issue 18, item 7)

- managers.is_admin: an admin of the fleet (`drivecoach console add-manager --admin`) reads the fleet's audit log.
- audit_log: append-only for the services. A fleet's role (the console, under the manager's fleet) inserts its
  fleet's rows and reads them (the console shows them to admins only); the console's own login inserts sign-ins
  (before any fleet role is assumed) and nothing else; nobody but the owner updates or deletes a row.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
WEB_ROLE = "drivecoach_web"  # migration 0011
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"


def upgrade() -> None:
    op.add_column("managers", sa.Column("is_admin", sa.Boolean(), server_default="false", nullable=False))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=True),  # None: not a manager (a driver's link)
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), server_default="", nullable=False),
        sa.Column("detail", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_fleet_at", "audit_log", ["fleet_id", sa.text("at DESC")])
    op.execute("ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY")
    # For the fleet roles only (members of the group role): a policy for PUBLIC would make the console's login
    # evaluate drivecoach_current_fleet(), which it may not execute, on its sign-in rows.
    op.execute(
        f"CREATE POLICY fleet_isolation ON audit_log TO {GROUP_ROLE} USING ({OWN_FLEET}) WITH CHECK ({OWN_FLEET})"
    )
    op.execute(f"GRANT SELECT, INSERT ON audit_log TO {GROUP_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE audit_log_id_seq TO {GROUP_ROLE}")
    op.execute(f"CREATE POLICY console_sign_ins ON audit_log FOR INSERT TO {WEB_ROLE} WITH CHECK (action = 'sign_in')")
    op.execute(f"GRANT INSERT ON audit_log TO {WEB_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE audit_log_id_seq TO {WEB_ROLE}")


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_column("managers", "is_admin")
