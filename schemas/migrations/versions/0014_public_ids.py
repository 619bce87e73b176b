"""public ids: answers, events and reviews get a random UUID, the only id of theirs the console shows (issue 17,
finding 6)

Their keys come from global sequences: a manager who saw answer 1041 and then 1187 learned how many answers the
other fleets got meanwhile. The keys stay (every reference and report joins on them, and they are cheap); the console
and its JSON API show `public_id` instead. Adding a column with a volatile default rewrites each table once (seconds
per million events).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("inferences", "events", "reviews")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("public_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        )
        op.create_unique_constraint(f"uq_{table}_public_id", table, ["public_id"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_constraint(f"uq_{table}_public_id", table, type_="unique")
        op.drop_column(table, "public_id")
