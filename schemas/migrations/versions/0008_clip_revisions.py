"""clip revisions: a late upload rebuilds its clip under the same id, and the newest revision's answer is current

The join emits a clip again, with a higher `revision`, when an upload lands in a window already emitted (the
footage was late, not wrong). Each answer records the revision it was made on and the frames it saw, so a safety
manager's review of an older revision keeps its answer, its frames and its label (marked by the revision it
reviewed); the newest revision's answer becomes the clip's current one, as the newest answer always was.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clips", sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("inferences", sa.Column("clip_revision", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("inferences", sa.Column("frames_uri", sa.Text(), nullable=True))
    op.drop_constraint("uq_inference_clip_model", "inferences", type_="unique")
    op.create_unique_constraint(
        "uq_inference_clip_model_revision", "inferences", ["clip_id", "model_version", "clip_revision"]
    )


def downgrade() -> None:
    # Only the newest revision's answer per clip and model fits the old key: older revisions' answers (and their
    # reviews and events) are dropped.
    op.execute("""DELETE FROM reviews WHERE inference_id IN (
                      SELECT id FROM inferences i WHERE EXISTS (
                          SELECT 1 FROM inferences j WHERE j.clip_id = i.clip_id AND j.model_version = i.model_version
                          AND j.clip_revision > i.clip_revision))""")
    op.execute("""DELETE FROM inferences i WHERE EXISTS (
                      SELECT 1 FROM inferences j WHERE j.clip_id = i.clip_id AND j.model_version = i.model_version
                      AND j.clip_revision > i.clip_revision)""")
    op.drop_constraint("uq_inference_clip_model_revision", "inferences", type_="unique")
    op.create_unique_constraint("uq_inference_clip_model", "inferences", ["clip_id", "model_version"])
    op.drop_column("inferences", "frames_uri")
    op.drop_column("inferences", "clip_revision")
    op.drop_column("clips", "revision")
