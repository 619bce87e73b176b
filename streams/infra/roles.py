"""Service logins: who connects to Postgres as what, so no running stage holds the owner's rights.

Migrations 0011 and 0012 create the group roles and their grants: `drivecoach_pipeline`, what the inference worker
writes; `drivecoach_web`, what the console server reads and writes itself (fleet data only as a fleet's role); and
`drivecoach_training`, what the retraining job reads (reviewed labels) and records (runs, model versions); and (0019)
`drivecoach_retention`, what the retention job deletes and logs; and (0020) `drivecoach_webhooks`, what the webhook
delivery process reads (endpoints, due deliveries) and records (attempts). A login
is a role of the operator's naming with a password from the environment, made a member of one group; the services'
URLs name it. Created here rather than in a migration: a migration must not hold a password, and a login is per
deployment, not per schema version.
"""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import Engine

from streams.errors import ConfigurationError

PIPELINE_GROUP = "drivecoach_pipeline"
CONSOLE_GROUP = "drivecoach_web"
TRAINING_GROUP = "drivecoach_training"
RETENTION_GROUP = "drivecoach_retention"  # migration 0019: deletes what expired, logs it
WEBHOOKS_GROUP = "drivecoach_webhooks"  # migration 0020: the webhook delivery process


def ensure_login(engine: Engine, login: str, password: str, group: str) -> None:
    """Create `login` (or reset its password) as a member of `group`, unable to bypass row-level security or to
    create anything beyond what the group grants. Needs CREATEROLE. Idempotent."""
    if not password:
        raise ConfigurationError(
            f"a password for the Postgres login {login!r} is required (from the environment)"
        )
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,))
            verb = sql.SQL("ALTER") if cur.fetchone() else sql.SQL("CREATE")
            cur.execute(
                sql.SQL(
                    "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD {}"
                ).format(verb, sql.Identifier(login), sql.Literal(password))
            )
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))
        raw.commit()
    finally:
        raw.close()


__all__ = [
    "CONSOLE_GROUP",
    "PIPELINE_GROUP",
    "RETENTION_GROUP",
    "TRAINING_GROUP",
    "WEBHOOKS_GROUP",
    "ensure_login",
]
