"""signin throttle: the console's failed sign-ins, shared by its replicas (issue 17, findings 4 and 5)

- console_signin_throttle: one row per client address, per username and per (address, username) with recent
  failed sign-ins (how many, and until when the next try is refused), and one per (address, username) that signed
  in (kind `trusted`: a username-wide delay does not apply there). The key is a SHA-256 of the kind and value, so
  typed usernames are not kept; `expires_at` (indexed) is when a row may be purged. Only the owner (the console's
  own connection) reads it: fleet roles get no grant.

Idle sessions need no column: `console_sessions.expires_at` slides forward while a session is used, never past
`created_at` + the session's lifetime.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_signin_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_console_signin_throttle_expires_at", "console_signin_throttle", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_signin_throttle_expires_at", table_name="console_signin_throttle")
    op.drop_table("console_signin_throttle")
