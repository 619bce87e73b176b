"""opaque fleet roles: a fleet's role gets a random name (issue 17, finding 6)

Any role may list every role of the cluster (`pg_roles`), and the names made since 0004 carried the fleet id
(`drivecoach_fleet_<fleet id>_<hash>`): each fleet's role could read the other fleets' names. Each bound role is
replaced by a new one named `drivecoach_fleet_<32 random hex>` with the same memberships (migration 0004's group
role; the migrating owner and migration 0011's console role, so both may SET ROLE to it), the binding moves to it,
and the old role is dropped. A fleet role holds no grant of its own (only its group's), so nothing else moves.
Replaced, not renamed: roles are cluster-wide, and with the old names two databases of one cluster with the same
fleet id shared one role; each database gets its own here. Another such database loses the shared role with this
upgrade, and reaches that fleet again once it is upgraded too (its own upgrade makes it a new role).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
WEB_ROLE = "drivecoach_web"  # migration 0011

_REPLACE = """DO $$ DECLARE r record; fresh text; BEGIN
    FOR r IN SELECT role_name, fleet_id FROM fleet_roles ORDER BY fleet_id FOR UPDATE LOOP
        fresh := {new_name};
        CONTINUE WHEN fresh = r.role_name;
        {create}
        EXECUTE format('GRANT %I TO CURRENT_USER', fresh);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{web}') THEN
            EXECUTE format('GRANT %I TO {web}', fresh);
        END IF;
        UPDATE fleet_roles SET role_name = fresh WHERE role_name = r.role_name;
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', r.role_name);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % still has objects elsewhere in the cluster: left in place', r.role_name;
        END;
    END LOOP; END $$"""
CREATE = f"EXECUTE format('CREATE ROLE %I NOLOGIN NOBYPASSRLS IN ROLE {GROUP_ROLE}', fresh);"

RANDOM_NAME = "'drivecoach_fleet_' || replace(gen_random_uuid()::text, '-', '')"
# streams/infra/tenancy.py's naming before this revision
OLD_NAME = (
    "'drivecoach_fleet_' || left(regexp_replace(lower(r.fleet_id), '[^a-z0-9_]', '_', 'g'), 24) || '_' "
    "|| left(encode(sha256(convert_to(r.fleet_id, 'UTF8')), 'hex'), 12)"
)


def upgrade() -> None:
    op.execute(_REPLACE.format(new_name=RANDOM_NAME, create=CREATE, web=WEB_ROLE))


def downgrade() -> None:
    """Back to the names derived from the fleet id; one that another database of the cluster still uses is kept."""
    create = f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = fresh) THEN {CREATE} END IF;"
    op.execute(_REPLACE.format(new_name=OLD_NAME, create=create, web=WEB_ROLE))
