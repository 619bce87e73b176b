"""Writes that would reach another fleet through a reference (issue 17, findings 1 and 2), with direct SQL.

Row-level security checks the fleet of the row written, not the fleet of the rows it points at: migration 0009 makes
every reference to a fleet's answer, clip or segment carry the fleet ((inference_id, fleet_id) -> inferences (id,
fleet_id), ...), so a row can name only its own fleet's parents, whoever writes it. The facts' SECURITY DEFINER
functions are the owner's alone: no fleet role may call them, and the only function of ours a fleet role may execute
is `drivecoach_current_fleet()` (with the invoker's rights; the policies call it). Trigger functions need no
EXECUTE grant: Postgres checks it when a trigger is created, not when it fires, so fleet roles' writes still keep
the facts current (the last test here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from streams.infra.tenancy import GROUP_ROLE, fleet_role
from streams.settings import Settings
from tests.integration.console_data import SeededFleet, seed_fleet

pytestmark = pytest.mark.integration

# Fleet-bound keys of migrations after 0009 (0016's coaching sessions, 0019's legal holds, 0020's outbox): left
# out of 0009's count.
LATER_FLEET_KEYS = {
    "fk_session_clips_session_fleet",
    "fk_session_clips_clip_fleet",
    "fk_webhook_outbox_endpoint_fleet",
    "fk_legal_holds_clip_fleet",
    "fk_rule_events_clip_fleet",
}
# What a fleet's role may execute outside pg_catalog and information_schema: the function the policies call.
EXPECTED_EXECUTABLE = {"drivecoach_current_fleet()"}
SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema')"


@dataclass(frozen=True)
class Fleets:
    engine: Engine
    a: SeededFleet
    b: SeededFleet
    ids: dict[str, Any]  # rows of each fleet the attacks point at: a_*/b_* inference, clip, segment


@pytest.fixture(scope="module")
def fleets(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleets]:
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path_factory.mktemp("tenancy-writes"))
    suffix = uuid.uuid4().hex[:6]
    a = seed_fleet(factory, settings, f"fleet-wa-{suffix}", clips=3, seed=31)
    b = seed_fleet(factory, settings, f"fleet-wb-{suffix}", clips=2, seed=32)
    ids: dict[str, Any] = {}
    with engine.begin() as conn:
        for key, fleet in (("a", a), ("b", b)):
            ids[f"{key}_inference"], ids[f"{key}_clip"], vehicle = conn.execute(
                text(
                    "SELECT i.id, i.clip_id, c.vehicle_id FROM current_inferences i JOIN clips c USING (clip_id) "
                    "WHERE i.fleet_id = :f ORDER BY i.id LIMIT 1"
                ),
                {"f": fleet.fleet_id},
            ).one()
            ids[f"{key}_segment"] = f"{fleet.fleet_id}-road-0"
            conn.execute(
                text(
                    "INSERT INTO segments (segment_id, fleet_id, vehicle_id, camera, start_ts, end_ts, video_uri) "
                    "VALUES (:s, :f, :v, 'road', 0, 10, 'file:///x.mp4')"
                ),
                {"s": ids[f"{key}_segment"], "f": fleet.fleet_id, "v": vehicle},
            )
        # An older answer of B's clip with no instruction yet: an instruction pointing at it could only be refused
        # by its reference (B's current answers already have one, whose primary key would refuse it first).
        conn.execute(
            text(
                "INSERT INTO model_versions (version, path, stage, demo, metrics) "
                "VALUES ('writes-older', '', 'retired', false, '{}') ON CONFLICT DO NOTHING"
            )
        )
        ids["b_bare_inference"] = conn.execute(
            text("""
            INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, description, raw_turn1,
                                    raw_turn2, latency_ms, prompt_tokens, generated_tokens, updated_at)
            VALUES (:f, :c, 'writes-older', 'cot-v1', true, '', '', '', 1, 1, 1, now() - interval '1 day')
            RETURNING id"""),
            {"f": b.fleet_id, "c": ids["b_clip"]},
        ).scalar_one()
    yield Fleets(engine, a, b, ids)
    engine.dispose()


def _facts(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the console's pages read about both fleets (as the owner: every fleet's rows)."""
    return {
        "answer_facts": [
            tuple(r) for r in conn.execute(text("SELECT * FROM answer_facts ORDER BY inference_id"))
        ],
        "event_facts": [tuple(r) for r in conn.execute(text("SELECT * FROM event_facts ORDER BY event_id"))],
        "review_queue": [
            tuple(r) for r in conn.execute(text("SELECT * FROM review_queue ORDER BY inference_id"))
        ],
    }


def _as_role(
    engine: Engine, fleet_id: str | None, statement: str, params: dict[str, Any]
) -> DBAPIError | None:
    """Run one statement under the fleet's role (None: as the owner, the sink's rights) and commit it; the error
    the database raised, or None when it took the write."""
    try:
        with engine.begin() as conn:
            if fleet_id is not None:
                conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, fleet_id)}"'))
            conn.execute(text(statement), params)
    except DBAPIError as err:
        return err
    return None


FLEET_ROLE_WRITES = {
    "event": (
        "INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s) "
        "VALUES (:a, :b_inference, 'phone_use', 'driver', 1, 3)"
    ),
    "review": (
        "INSERT INTO reviews (fleet_id, inference_id, reviewer, verdict) "
        "VALUES (:a, :b_inference, 'intruder', 'accepted')"
    ),
    "instruction": "INSERT INTO instructions (inference_id, fleet_id, text) VALUES (:b_bare_inference, :a, 'x')",
}


@pytest.mark.attack("direct_sql")
@pytest.mark.parametrize("row", list(FLEET_ROLE_WRITES))
def test_a_fleet_role_cannot_attach_a_row_to_another_fleets_answer(fleets: Fleets, row: str) -> None:
    """The attack of finding 1: the row carries the attacker's own fleet (so the policy admits it) and B's answer.
    Before 0009 it was taken: B's clip, driver and vehicle appeared in A's reports, and B's queue changed."""
    engine, a = fleets.engine, fleets.a
    with engine.connect() as conn:
        before = _facts(conn)
    err = _as_role(engine, a.fleet_id, FLEET_ROLE_WRITES[row], {"a": a.fleet_id, **fleets.ids})
    with engine.connect() as conn:
        assert _facts(conn) == before
    assert isinstance(err, IntegrityError) and "foreign key" in str(err), err


OWNER_WRITES = {
    "inference -> clip": """
        INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, description, raw_turn1,
                                raw_turn2, latency_ms, prompt_tokens, generated_tokens, clip_revision)
        VALUES (:a, :b_clip, 'writes-older', 'cot-v1', true, '', '', '', 1, 1, 1, 99)""",
    "clip segment -> clip": (
        "INSERT INTO clip_segments (clip_id, segment_id, fleet_id) VALUES (:b_clip, :a_segment, :a)"
    ),
    "clip segment -> segment": (
        "INSERT INTO clip_segments (clip_id, segment_id, fleet_id) VALUES (:a_clip, :b_segment, :a)"
    ),
    "event -> inference": (
        "INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s) "
        "VALUES (:a, :b_inference, 'phone_use', 'driver', 1, 3)"
    ),
    "rule event -> clip": """
        INSERT INTO rule_events (fleet_id, clip_id, clip_revision, type, start_s, end_s, peak, thresholds)
        VALUES (:a, :b_clip, 1, 'harsh_braking', 1, 2, 0.5, 'passenger')""",
    "answer fact -> inference": """
        INSERT INTO answer_facts (inference_id, fleet_id, clip_id, vehicle_id, driver_id, model_version, occurred_at,
                                  events, max_severity, reviewed)
        VALUES (:b_bare_inference, :a, :b_clip, 'v', NULL, 'writes-older', now(), 0, 0, false)""",
}


@pytest.mark.attack("direct_sql")
@pytest.mark.parametrize("row", list(OWNER_WRITES))
def test_no_writer_can_point_a_row_at_another_fleets_parent(fleets: Fleets, row: str) -> None:
    """Fleet roles may not write these tables at all; the references hold for the owner too (the sink, bulk
    loads), which row-level security does not check."""
    err = _as_role(fleets.engine, None, OWNER_WRITES[row], {"a": fleets.a.fleet_id, **fleets.ids})
    assert isinstance(err, IntegrityError) and "foreign key" in str(err), err


def test_rows_of_the_own_fleet_are_still_taken(fleets: Fleets) -> None:
    """The same writes with the fleet's own parents: the references refuse only other fleets' ones."""
    engine, a, ids = fleets.engine, fleets.a, fleets.ids
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(
            text("INSERT INTO clip_segments VALUES (:a_clip, :a_segment, :a)"), {"a": a.fleet_id, **ids}
        )
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
        conn.execute(
            text(FLEET_ROLE_WRITES["event"].replace(":b_inference", ":a_inference")), {"a": a.fleet_id, **ids}
        )
        conn.execute(
            text(FLEET_ROLE_WRITES["review"].replace(":b_inference", ":a_inference")),
            {"a": a.fleet_id, **ids},
        )
        transaction.rollback()


def _our_functions(conn: Connection, where: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = conn.execute(
        text(f"""SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%' AND {where}"""),
        params or {},
    ).all()
    return {name: config for name, config in rows}


@pytest.mark.attack("direct_sql")
def test_fleet_roles_execute_only_the_expected_functions(fleets: Fleets) -> None:
    """Every function outside the system schemas that a fleet's role (or the group role it inherits from) may
    execute. Functions are executable by PUBLIC unless revoked: a new one must be revoked, or added here."""
    with fleets.engine.connect() as conn:
        for role in (fleet_role(conn, fleets.a.fleet_id), fleet_role(conn, fleets.b.fleet_id), GROUP_ROLE):
            executable = _our_functions(conn, "has_function_privilege(:r, p.oid, 'EXECUTE')", {"r": role})
            assert set(executable) == EXPECTED_EXECUTABLE, role
            # invoker's rights, and a body that a temporary table cannot redirect
            assert all(c and "search_path=pg_catalog, public, pg_temp" in c for c in executable.values())


@pytest.mark.attack("direct_sql")
def test_security_definer_functions_are_the_owners_alone(fleets: Fleets) -> None:
    """Finding 2: `drivecoach_refresh_event_facts` was executable by PUBLIC; a fleet's role called it on another
    fleet's clips and held their row locks until it committed."""
    engine, a, ids = fleets.engine, fleets.a, fleets.ids
    with engine.connect() as conn:
        definers = _our_functions(conn, "p.prosecdef")
    assert "drivecoach_refresh_event_facts(text[])" in definers and len(definers) >= 6
    for name, config in definers.items():
        assert config == ["search_path=pg_catalog, public, pg_temp"], name
    for name in definers:
        call = f"SELECT {name.replace('(text[])', '(ARRAY[:b_clip])')}"
        err = _as_role(engine, a.fleet_id, call, ids)
        assert isinstance(err, ProgrammingError) and "permission denied for function" in str(err), (name, err)


@pytest.mark.attack("direct_sql")
def test_a_temporary_table_cannot_stand_in_for_fleet_roles(fleets: Fleets) -> None:
    """`drivecoach_current_fleet()` runs with the caller's rights; with the caller's search_path its body read a
    temporary table named `fleet_roles` (pg_temp comes first) before the real one, and the role passed every policy
    as the fleet that table named. Its search_path is pinned with pg_temp last, and the table qualified."""
    engine, a, b = fleets.engine, fleets.a, fleets.b
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
        conn.execute(
            text("CREATE TEMPORARY TABLE fleet_roles (role_name text, fleet_id text) ON COMMIT DROP")
        )
        conn.execute(text("INSERT INTO fleet_roles VALUES (current_user, :b)"), {"b": b.fleet_id})
        conn.execute(text("SET LOCAL search_path = pg_temp, public"))
        assert conn.execute(text("SELECT public.drivecoach_current_fleet()")).scalar() == a.fleet_id
        assert set(conn.execute(text("SELECT DISTINCT fleet_id FROM public.clips")).scalars()) == {a.fleet_id}
        transaction.rollback()


def test_fleet_role_writes_still_keep_the_facts_current(fleets: Fleets) -> None:
    """With EXECUTE revoked from PUBLIC, the triggers still fire for a fleet role's writes: its own review takes the
    answer off its queue, in the same transaction."""
    engine, a, ids = fleets.engine, fleets.a, fleets.ids
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
        queued = "SELECT count(*) FROM review_queue WHERE inference_id = :a_inference"
        assert conn.execute(text(queued), ids).scalar_one() == 1
        conn.execute(
            text(FLEET_ROLE_WRITES["review"].replace(":b_inference", ":a_inference")),
            {"a": a.fleet_id, **ids},
        )
        assert conn.execute(text(queued), ids).scalar_one() == 0
        transaction.rollback()


def test_0009_upgrades_a_database_with_data_and_downgrades(tmp_path: Path) -> None:
    """0008 -> 0009 on a database holding two fleets' rows, back to 0008 and up again; a database holding a row
    that names another fleet's answer is refused with the query that finds it."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade
    from tests.conftest import fresh_database

    with fresh_database() as url:
        engine = create_engine(url)
        factory = sessionmaker(engine)
        settings = Settings(home=tmp_path)
        suffix = uuid.uuid4().hex[:6]
        # Seeded by today's sink, which writes today's schema, then taken down to 0008 with the data in it.
        a = seed_fleet(factory, settings, f"fleet-ma-{suffix}", clips=2, seed=41)
        b = seed_fleet(factory, settings, f"fleet-mb-{suffix}", clips=2, seed=42)
        engine.dispose()
        command.downgrade(alembic_config(url), "0008")

        def state() -> tuple[set[str], bool]:
            with engine.connect() as conn:
                names = (
                    set(
                        conn.execute(
                            text("SELECT conname FROM pg_constraint WHERE conname LIKE 'fk\\_%\\_fleet'")
                        ).scalars()
                    )
                    - LATER_FLEET_KEYS
                )
                public = conn.execute(
                    text(
                        "SELECT has_function_privilege('public', 'drivecoach_refresh_event_facts(text[])', "
                        "'EXECUTE')"
                    )
                ).scalar_one()
            return names, public

        try:
            with engine.connect() as conn:
                before = _facts(conn)
            upgrade(url)
            names, public = state()
            assert len(names) == 7 and not public, names
            with engine.connect() as conn:
                assert _facts(conn) == before
            command.downgrade(alembic_config(url), "0008")
            assert state() == (set(), True)
            with engine.begin() as conn:  # what 0008 let through
                b_inference = conn.execute(
                    text("SELECT id FROM inferences WHERE fleet_id = :b LIMIT 1"), {"b": b.fleet_id}
                ).scalar_one()
                conn.execute(
                    text(
                        "INSERT INTO reviews (fleet_id, inference_id, reviewer, verdict) "
                        "VALUES (:a, :i, 'intruder', 'accepted')"
                    ),
                    {"a": a.fleet_id, "i": b_inference},
                )
            with pytest.raises(RuntimeError, match=r"1 row\(s\) of reviews"):
                upgrade(url)
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM reviews WHERE reviewer = 'intruder'"))
            upgrade(url)
            assert len(state()[0]) == 7
        finally:
            engine.dispose()
