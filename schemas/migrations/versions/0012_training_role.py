"""training role: the scheduled retraining job gets its own grants, so no running job connects as the owner
(issue 17, finding 7)

- drivecoach_training: a NOLOGIN group role holding exactly what `training.retrain` and `training.export` use: read
  every fleet's reviews with the answers and clips they label (the export), record its runs (training_runs), and
  register, promote or reject model versions (schemas/registry.py). It reads every fleet's labels, so each table it
  reads gets a permissive SELECT policy for this role alone (policies are per role and OR'ed: fleet roles still see
  only their own fleet). No write to any fleet table, no console table, no DDL, no BYPASSRLS.

A login joins it with `drivecoach migrate --training-login NAME` (password from DRIVECOACH_TRAINING_DB_PASSWORD).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TRAINING_ROLE = "drivecoach_training"
# table -> privileges (training/retrain.py, training/export.py, schemas/registry.py)
TRAINING_READS = ["reviews", "inferences", "clips"]
TRAINING_WRITES = {"model_versions": "SELECT, INSERT, UPDATE", "training_runs": "SELECT, INSERT, UPDATE"}


def upgrade() -> None:
    op.execute(f"""DO $$ BEGIN CREATE ROLE {TRAINING_ROLE} NOLOGIN NOBYPASSRLS;
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""")
    for table in TRAINING_READS:
        op.execute(f"GRANT SELECT ON {table} TO {TRAINING_ROLE}")
        op.execute(f"CREATE POLICY training_reads ON {table} FOR SELECT TO {TRAINING_ROLE} USING (true)")
    for table, privileges in TRAINING_WRITES.items():  # row-level security is on for both (migration 0004)
        op.execute(f"GRANT {privileges} ON {table} TO {TRAINING_ROLE}")
        op.execute(
            f"CREATE POLICY training_writes ON {table} TO {TRAINING_ROLE} USING (true) WITH CHECK (true)"
        )
    op.execute(f"GRANT USAGE ON SEQUENCE training_runs_id_seq TO {TRAINING_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE USAGE ON SEQUENCE training_runs_id_seq FROM {TRAINING_ROLE}")
    for table in TRAINING_WRITES:
        op.execute(f"DROP POLICY training_writes ON {table}")
        op.execute(f"REVOKE ALL ON {table} FROM {TRAINING_ROLE}")
    for table in TRAINING_READS:
        op.execute(f"DROP POLICY training_reads ON {table}")
        op.execute(f"REVOKE ALL ON {table} FROM {TRAINING_ROLE}")
    # The role is cluster-wide and may serve other databases of this cluster: it stays, with nothing granted here.
