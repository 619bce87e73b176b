"""Per-fleet isolation in Postgres: each fleet has a role, and managers' queries run under it.

Migration 0004's policies let a role see the rows of the fleet that `fleet_roles` binds it to, and nothing else.
The console and `drivecoach report` open every transaction with `SET LOCAL ROLE <fleet role>`, so a query that
forgets its `WHERE fleet_id = ...` still cannot return another fleet's rows. `SET LOCAL` ends with the
transaction, so a pooled connection goes back to the pool as the owner.

A fleet role's name is random (`drivecoach_fleet_<32 hex>`), bound to its fleet only in `fleet_roles`: any role may
list every role of the cluster (`pg_roles`), and a name derived from the fleet id told each fleet the other fleets'
names (issue 17, finding 6; migration 0013 renamed the existing ones).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from schemas.db import Fleet, FleetRole
from streams.errors import DrivecoachError
from streams.infra.roles import CONSOLE_GROUP

GROUP_ROLE = "drivecoach_console"


class FleetAccessError(DrivecoachError):
    """The fleet's role cannot be created or assumed (missing privileges, or an unknown fleet)."""


ROLE_LOCKS = 0x666C6565  # pg_advisory_xact_lock's first key: "flee"; the second is the fleet id's hash


def fleet_role(conn: Connection, fleet_id: str) -> str | None:
    """The name of the role bound to `fleet_id`, if any (readable by the owner and the console's login)."""
    return conn.execute(
        text("SELECT role_name FROM fleet_roles WHERE fleet_id = :f"), {"f": fleet_id}
    ).scalar()


def ensure_fleet_role(conn: Connection, fleet_id: str) -> str:
    """Create the fleet (if new), its role (if missing) and the binding; needs CREATEROLE. Idempotent, and two
    concurrent calls for one new fleet make one role (they take the fleet's lock in turn)."""
    conn.execute(insert(Fleet).values(fleet_id=fleet_id).on_conflict_do_nothing())
    conn.execute(text("SELECT pg_advisory_xact_lock(:k, hashtext(:f))"), {"k": ROLE_LOCKS, "f": fleet_id})
    role = fleet_role(conn, fleet_id) or f"drivecoach_fleet_{secrets.token_hex(16)}"
    try:
        with conn.begin_nested():
            conn.execute(
                text(f"""DO $$ BEGIN
                CREATE ROLE "{role}" NOLOGIN NOBYPASSRLS IN ROLE {GROUP_ROLE};
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""")
            )
            # The connecting role must be a member to SET ROLE to it (a superuser already may); so must the console
            # server's own role (migration 0011), whose login is not the one creating fleets.
            conn.execute(text(f'GRANT "{role}" TO CURRENT_USER'))
            conn.execute(
                text(f"""DO $$ BEGIN
                IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{CONSOLE_GROUP}') THEN
                    GRANT "{role}" TO {CONSOLE_GROUP};
                END IF; END $$""")
            )
    except Exception as err:
        raise FleetAccessError(
            f"cannot create the Postgres role of fleet {fleet_id!r} ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0]}); the database user needs CREATEROLE"
        ) from err
    conn.execute(insert(FleetRole).values(role_name=role, fleet_id=fleet_id).on_conflict_do_nothing())
    return role


@contextmanager
def fleet_connection(engine: Engine, fleet_id: str) -> Iterator[Connection]:
    """A transaction that sees and writes only `fleet_id`'s rows; committed when the block ends without error."""
    with engine.begin() as conn:
        role = fleet_role(conn, fleet_id)
        if role is None:
            raise FleetAccessError(
                f"fleet {fleet_id!r} has no role yet; create it with `drivecoach console "
                "add-manager` (or tenancy.ensure_fleet_role)"
            )
        conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        # Managers' queries are short; Postgres' JIT compiles any plan whose estimate passes jit_above_cost, and at a
        # million events that compile cost more than the query (`drivecoach bench reports`, docs/benchmarks.md).
        conn.execute(text("SET LOCAL jit = off"))
        yield conn


__all__ = ["GROUP_ROLE", "FleetAccessError", "ensure_fleet_role", "fleet_connection", "fleet_role"]
