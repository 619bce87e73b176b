"""service roles: the inference worker and the console server get their own grants, so neither connects as the
owner (issue 17, finding 7)

- drivecoach_pipeline: a NOLOGIN group role holding exactly what the worker's sink and model registry use: insert
  the fleet, vehicle, driver, model version and segments a clip refers to; write clips, their segment links,
  answers, events and instructions forward; read reviews (a reviewed answer is left alone); register and promote
  model versions. It writes every fleet's rows, so each table it touches gets a permissive policy for this role
  alone (policies are per role and OR'ed: fleet roles still see only their own fleet). No BYPASSRLS (only a
  superuser may grant it, and it would cover every table), no DDL, no TRUNCATE, no console table, no report facts
  (their SECURITY DEFINER triggers write them), no function of ours.
- drivecoach_web: the console server's group role. Its own rows only: managers (read: sign-in), sessions and the
  sign-in throttle (read and write), fleet_roles (read every binding: a policy for this role alone) and the schema's
  revision. Every fleet's data it reaches only through `SET LOCAL ROLE <fleet role>` (streams/infra/tenancy.py):
  it is a member of every fleet role (granted here for the existing ones, by `ensure_fleet_role` for new ones),
  and NOINHERIT, so it holds none of their rights without that SET ROLE. Creating fleets, fleet roles and managers
  (`console add-manager`) stays the owner's.

Logins join them with `drivecoach migrate --pipeline-login NAME --console-login NAME` (passwords from the
environment: streams/infra/roles.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PIPELINE_ROLE = "drivecoach_pipeline"
# table -> privileges (streams/inference/sink.py and schemas/registry.py)
PIPELINE_GRANTS = {
    "fleets": "SELECT, INSERT",
    "vehicles": "SELECT, INSERT",
    "drivers": "SELECT, INSERT",
    "model_versions": "SELECT, INSERT, UPDATE",
    "segments": "SELECT, INSERT",
    "clips": "SELECT, INSERT, UPDATE",
    "clip_segments": "SELECT, INSERT, DELETE",
    "inferences": "SELECT, INSERT, UPDATE",
    "events": "SELECT, INSERT, DELETE",
    "instructions": "SELECT, INSERT, UPDATE, DELETE",
    "reviews": "SELECT",
    "event_types": "SELECT",
}
PIPELINE_RLS = [t for t in PIPELINE_GRANTS if t != "event_types"]  # migration 0004 enabled row-level security
PIPELINE_SEQUENCES = ["inferences_id_seq", "events_id_seq"]  # instructions are keyed by their inference

WEB_ROLE = "drivecoach_web"
# table -> privileges (streams/console/auth.py, throttle.py; tenancy.fleet_connection; the revision check at start)
WEB_GRANTS = {
    "managers": "SELECT",
    "console_sessions": "SELECT, INSERT, UPDATE, DELETE",
    "console_signin_throttle": "SELECT, INSERT, UPDATE, DELETE",
    "fleet_roles": "SELECT",
    "alembic_version": "SELECT",
}


def _create_role(name: str, attributes: str) -> None:
    op.execute(f"""DO $$ BEGIN CREATE ROLE {name} {attributes};
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""")


def upgrade() -> None:
    _create_role(PIPELINE_ROLE, "NOLOGIN NOBYPASSRLS")
    for table, privileges in PIPELINE_GRANTS.items():
        op.execute(f"GRANT {privileges} ON {table} TO {PIPELINE_ROLE}")
    for table in PIPELINE_RLS:
        op.execute(
            f"CREATE POLICY pipeline_writes ON {table} TO {PIPELINE_ROLE} USING (true) WITH CHECK (true)"
        )
    op.execute(f"GRANT USAGE ON SEQUENCE {', '.join(PIPELINE_SEQUENCES)} TO {PIPELINE_ROLE}")

    _create_role(WEB_ROLE, "NOLOGIN NOINHERIT NOBYPASSRLS")
    for table, privileges in WEB_GRANTS.items():
        op.execute(f"GRANT {privileges} ON {table} TO {WEB_ROLE}")
    op.execute(f"CREATE POLICY console_lookup ON fleet_roles FOR SELECT TO {WEB_ROLE} USING (true)")
    op.execute(f"""DO $$ DECLARE r text; BEGIN
                   FOR r IN SELECT role_name FROM fleet_roles LOOP
                       EXECUTE format('GRANT %I TO {WEB_ROLE}', r);
                   END LOOP; END $$""")


def downgrade() -> None:
    op.execute(f"""DO $$ DECLARE r text; BEGIN
                   FOR r IN SELECT role_name FROM fleet_roles
                            WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) LOOP
                       EXECUTE format('REVOKE %I FROM {WEB_ROLE}', r);
                   END LOOP; END $$""")
    op.execute("DROP POLICY console_lookup ON fleet_roles")
    for table in WEB_GRANTS:
        op.execute(f"REVOKE ALL ON {table} FROM {WEB_ROLE}")
    op.execute(f"REVOKE USAGE ON SEQUENCE {', '.join(PIPELINE_SEQUENCES)} FROM {PIPELINE_ROLE}")
    for table in PIPELINE_RLS:
        op.execute(f"DROP POLICY pipeline_writes ON {table}")
    for table in PIPELINE_GRANTS:
        op.execute(f"REVOKE ALL ON {table} FROM {PIPELINE_ROLE}")
    # The roles are cluster-wide and may serve other databases of this cluster: they stay, with nothing granted here.
