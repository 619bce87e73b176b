"""privacy: faces in the driver view are blurred in everything the console and exports show, unless the manager's
role carries the explicit `view_unblurred` permission (issue 18, item 3); every use is written to the audit log.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "managers", sa.Column("view_unblurred", sa.Boolean(), server_default="false", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("managers", "view_unblurred")
