"""Choosing a Postgres: the environment's URL, else the local server, else the embedded one from the wheel."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect

from streams.infra.database import migrate, resolve_database_url
from streams.settings import Settings
from tests.conftest import LOCAL_PG

pytestmark = pytest.mark.integration


def test_an_explicit_url_wins(tmp_path: Path, database_url: str) -> None:
    db = resolve_database_url(Settings(home=tmp_path, database_url=database_url))
    assert db.source == "env" and db.url.database == database_url.rsplit("/", 1)[-1]


def test_local_server_gets_its_database_created(tmp_path: Path) -> None:
    name = f"drivecoach_local_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=tmp_path,
        database_name=name,
        local_postgres=LOCAL_PG.replace("postgresql://", "postgresql+psycopg://"),
    )
    try:
        db = resolve_database_url(settings)
        assert db.source == "local" and db.url.database == name
        migrate(db.url)
        migrate(db.url)  # idempotent
        engine = create_engine(db.url)
        assert {"clips", "inferences", "events", "instructions", "reviews"} <= set(
            inspect(engine).get_table_names()
        )
        engine.dispose()
    finally:
        with psycopg.connect(f"{LOCAL_PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_embedded_postgres_when_no_server_answers(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", local_postgres="postgresql+psycopg://postgres@127.0.0.1:1")
    db = resolve_database_url(settings)
    try:
        assert db.source == "embedded"
        migrate(db.url)
        engine = create_engine(db.url)
        assert "model_versions" in inspect(engine).get_table_names()
        engine.dispose()
    finally:
        db.close()
