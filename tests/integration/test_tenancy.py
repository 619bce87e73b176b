"""Row-level security per fleet, proved with direct SQL: under a fleet's role, queries that name no fleet at all
still see, change and add only that fleet's rows."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from streams.infra.tenancy import fleet_connection, fleet_role
from streams.settings import Settings
from tests.conftest import fresh_database
from tests.integration.console_data import seed_fleet

pytestmark = pytest.mark.integration
FLEET_TABLES = [
    "fleets",
    "vehicles",
    "drivers",
    "clips",
    "inferences",
    "events",
    "instructions",
    "reviews",
    "event_facts",
    "answer_facts",
    "driver_week_facts",
    "rule_events",
    "current_inferences",
    "report_events",
    "report_driving",
    "review_queue",
]


@pytest.fixture(scope="module")
def two_fleets(own_database_url: str, tmp_path_factory: pytest.TempPathFactory):
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path_factory.mktemp("tenancy"))
    suffix = uuid.uuid4().hex[:6]
    a = seed_fleet(factory, settings, f"fleet-a-{suffix}", clips=3, seed=21)
    b = seed_fleet(factory, settings, f"fleet-b-{suffix}", clips=2, seed=22)
    with (
        engine.begin() as conn
    ):  # the telemetry rules' events (migration 0023): whatever the trips, each fleet has some
        for fleet in (a, b):
            conn.execute(
                text("""INSERT INTO rule_events (fleet_id, clip_id, clip_revision, type, start_s, end_s, peak, thresholds)
                        SELECT fleet_id, clip_id, revision, 'harsh_braking', 0.5, 1.5, 0.4, 'passenger' FROM clips
                        WHERE fleet_id = :f ORDER BY clip_id LIMIT 1 ON CONFLICT DO NOTHING"""),
                {"f": fleet.fleet_id},
            )
    yield engine, a, b
    engine.dispose()


@pytest.mark.attack("direct_sql")
def test_every_table_and_view_shows_only_the_roles_fleet(two_fleets) -> None:
    engine, a, b = two_fleets
    with engine.connect() as conn:  # the owner sees both fleets: the data is there to leak
        owner = {
            t: set(conn.execute(text(f"SELECT DISTINCT fleet_id FROM {t}")).scalars()) for t in FLEET_TABLES
        }
    assert all({a.fleet_id, b.fleet_id} <= fleets for t, fleets in owner.items() if t != "reviews"), owner
    for fleet in (a, b):
        with engine.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, fleet.fleet_id)}"'))
            for table in FLEET_TABLES:
                seen = set(conn.execute(text(f"SELECT DISTINCT fleet_id FROM {table}")).scalars())  # no WHERE
                assert seen <= {fleet.fleet_id}, (table, seen)
            assert conn.execute(text("SELECT count(*) FROM clips")).scalar() == len(fleet.clips)


@pytest.mark.attack("direct_sql")
def test_writes_cannot_reach_another_fleet(two_fleets) -> None:
    engine, a, b = two_fleets
    with engine.begin() as conn:
        role = fleet_role(conn, a.fleet_id)
        b_inference = conn.execute(
            text("SELECT id FROM inferences WHERE fleet_id = :f LIMIT 1"), {"f": b.fleet_id}
        ).scalar_one()
        b_statuses = conn.execute(
            text("SELECT count(*) FROM events WHERE fleet_id = :f AND coaching_status = 'needs_review'"),
            {"f": b.fleet_id},
        ).scalar_one()
    with engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        changed = conn.execute(text("UPDATE events SET coaching_status = 'dismissed'")).rowcount
        deleted = conn.execute(
            text("DELETE FROM events WHERE inference_id = :i"), {"i": b_inference}
        ).rowcount
        assert deleted == 0 and changed == conn.execute(text("SELECT count(*) FROM events")).scalar()
        conn.rollback()
    # A review labelled with the other fleet is refused by the policy's check.
    with pytest.raises(ProgrammingError, match="row-level security"), engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        conn.execute(
            text(
                "INSERT INTO reviews (fleet_id, inference_id, reviewer, verdict) "
                "VALUES (:f, :i, 'intruder', 'accepted')"
            ),
            {"f": b.fleet_id, "i": b_inference},
        )
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM events WHERE fleet_id = :f AND coaching_status = 'needs_review'"),
                {"f": b.fleet_id},
            ).scalar_one()
            == b_statuses
        )
        assert (
            conn.execute(text("SELECT count(*) FROM reviews WHERE fleet_id = :f"), {"f": b.fleet_id}).scalar()
            == 0
        )


@pytest.mark.attack("direct_sql")
def test_fleet_roles_only_read_the_report_facts(two_fleets) -> None:
    engine, a, _ = two_fleets
    for statement in (
        "DELETE FROM event_facts",
        "UPDATE event_facts SET coaching_status = 'coached'",
        "UPDATE answer_facts SET reviewed = true",
        "DELETE FROM driver_week_facts",
    ):
        with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
            conn.execute(text(statement))


@pytest.mark.attack("direct_sql")
@pytest.mark.parametrize("table", ["managers", "console_sessions"])
def test_fleet_roles_cannot_read_sign_ins(two_fleets, table: str) -> None:
    engine, a, _ = two_fleets
    with pytest.raises(ProgrammingError, match="permission denied"), engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
        conn.execute(text(f"SELECT * FROM {table}"))


@pytest.mark.attack("direct_sql")
def test_a_fleet_role_cannot_turn_row_security_off(two_fleets) -> None:
    engine, a, _ = two_fleets
    with pytest.raises(DBAPIError, match="row-level security"), engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
        conn.execute(text("SET LOCAL row_security = off"))
        conn.execute(text("SELECT count(*) FROM clips"))


@pytest.mark.attack("direct_sql")
def test_fleet_connection_is_bounded_and_resets(two_fleets) -> None:
    engine, a, _b = two_fleets
    with fleet_connection(engine, a.fleet_id) as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == fleet_role(conn, a.fleet_id)
        assert set(conn.execute(text("SELECT clip_id FROM clips")).scalars()) == {
            s.scenario_id for s in a.clips
        }
    with engine.connect() as conn:  # back in the pool as the owner
        assert (
            conn.execute(text("SELECT current_user")).scalar()
            == conn.execute(text("SELECT session_user")).scalar()
        )


def test_unknown_fleet_has_no_role(two_fleets, tmp_path: Path) -> None:
    from streams.infra.tenancy import FleetAccessError

    engine, _, _ = two_fleets
    with pytest.raises(FleetAccessError, match="has no role"), fleet_connection(engine, "fleet-nobody"):
        pass


def test_cli_report_runs_under_the_fleet_role(
    two_fleets, own_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from streams.cli import app

    _engine, a, _b = two_fleets
    monkeypatch.setenv("DRIVECOACH_DATABASE_URL", own_database_url)
    runner = CliRunner()
    result = runner.invoke(app, ["report", "queue", "--fleet", a.fleet_id, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["fleet_id"] for r in rows} == {a.fleet_id} and len(rows) == len(a.clips)
    assert runner.invoke(app, ["report", "queue", "--format", "json"]).exit_code == 2  # no fleet: refused
    missing = runner.invoke(app, ["report", "events", "--fleet", "fleet-typo"])
    assert missing.exit_code == 1 and "no fleet" in missing.output


def test_0004_downgrades_and_upgrades_again() -> None:
    """Roles are cluster-wide and outlive the database: upgrading a second time finds them and goes on."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade
    from tests.conftest import fresh_database

    with fresh_database(revision=None) as url:
        engine = create_engine(url)

        def state() -> tuple[bool, bool, bool]:
            with engine.connect() as conn:
                return (
                    bool(conn.execute(text("SELECT to_regclass('managers')")).scalar()),
                    conn.execute(
                        text("SELECT relrowsecurity FROM pg_class WHERE relname = 'clips'")
                    ).scalar(),
                    "security_invoker=true"
                    in (
                        conn.execute(
                            text("SELECT reloptions FROM pg_class WHERE relname = 'report_events'")
                        ).scalar()
                        or []
                    ),
                )

        try:
            upgrade(url)
            assert state() == (True, True, True)
            command.downgrade(alembic_config(url), "0003")
            assert state() == (False, False, False)
            upgrade(url)
            assert state() == (True, True, True)
        finally:
            engine.dispose()


def test_report_events_follow_every_writer_in_the_same_transaction(two_fleets) -> None:
    """event_facts and answer_facts (migration 0007) are written by triggers: after review actions under a fleet's
    role, a newer model's answer and its removal, report_events and review_queue still give the rows of their
    original definitions (0002's, over the tables). Rolled back, so the module's other tests see the seeded
    fleets."""
    import importlib

    from streams.console.review import EventIn, ReviewIn, apply_review
    from tests.integration.facts import differing_rows

    m = importlib.import_module("schemas.migrations.versions.0005_report_indexes")
    engine, _a, b = two_fleets
    fleets = [_a.fleet_id, b.fleet_id]

    def assert_current(conn) -> int:
        queue, differ = differing_rows(conn, "review_queue", m.REVIEW_QUEUE_0002, fleets)
        assert differ == 0, ("review_queue", queue, differ)
        total, differ = differing_rows(conn, "report_events", m.REPORT_EVENTS_0002, fleets)
        assert differ == 0, ("report_events", total, differ)
        return total

    with engine.connect() as conn, conn.begin() as transaction:
        assert assert_current(conn) > 0
        answers = conn.execute(
            text(
                "SELECT i.id, c.end_ts - c.start_ts FROM current_inferences i "
                "JOIN clips c USING (clip_id) WHERE i.fleet_id = :f ORDER BY i.id"
            ),
            {"f": b.fleet_id},
        ).all()
        assert len(answers) >= 2
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, b.fleet_id)}"'))
        correction = [EventIn(type="phone_use", start=1, end=3), EventIn(type="speeding", start=4, end=6)]
        apply_review(
            conn,
            fleet_id=b.fleet_id,
            reviewer="t",
            inference_id=answers[0][0],
            clip_duration=answers[0][1],
            review=ReviewIn(action="correct", events=correction),
        )
        apply_review(
            conn,
            fleet_id=b.fleet_id,
            reviewer="t",
            inference_id=answers[0][0],
            clip_duration=answers[0][1],
            review=ReviewIn(action="coached"),
        )
        apply_review(
            conn,
            fleet_id=b.fleet_id,
            reviewer="t",
            inference_id=answers[1][0],
            clip_duration=answers[1][1],
            review=ReviewIn(action="dismiss"),
        )
        conn.execute(text("RESET ROLE"))
        statuses = dict(
            conn.execute(
                text("SELECT type, coaching_status FROM report_events WHERE inference_id = :i"),
                {"i": answers[0][0]},
            ).all()
        )
        assert statuses == {"phone_use": "coached", "speeding": "coached"}
        assert_current(conn)
        clip = conn.execute(
            text("SELECT clip_id FROM inferences WHERE id = :i"), {"i": answers[1][0]}
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO model_versions (version, path, stage, demo, metrics) "
                "VALUES ('tenancy-newer', '', 'candidate', false, '{}')"
            )
        )
        newer = conn.execute(
            text("""
            INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version, valid, description, raw_turn1,
                                    raw_turn2, latency_ms, prompt_tokens, generated_tokens, updated_at)
            VALUES (:f, :c, 'tenancy-newer', 'cot-v1', true, '', '', '', 1, 1, 1, now() + interval '1 hour')
            RETURNING id"""),
            {"f": b.fleet_id, "c": clip},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s) "
                "VALUES (:f, :i, 'following_distance', 'road', 2, 5)"
            ),
            {"f": b.fleet_id, "i": newer},
        )
        assert conn.execute(
            text("SELECT array_agg(type) FROM report_events WHERE clip_id = :c"), {"c": clip}
        ).scalar_one() == ["following_distance"]
        assert_current(conn)
        conn.execute(
            text("DELETE FROM inferences WHERE id = :i"), {"i": newer}
        )  # the older answer is current again
        assert_current(conn)
        assert set(
            conn.execute(
                text("SELECT inference_id FROM report_events WHERE clip_id = :c"), {"c": clip}
            ).scalars()
        ) <= {answers[1][0]}
        transaction.rollback()


def _readable(fleet_id: str) -> str:
    """What role names carried of a fleet id before migration 0013."""
    return re.sub(r"[^a-z0-9_]", "_", fleet_id.lower())[:24]


@pytest.mark.attack("direct_sql")
def test_the_role_list_names_no_fleet(two_fleets) -> None:
    """Issue 17, finding 6: every role may read `pg_roles`, and fleet roles were named after their fleets; now a
    fleet's role learns neither another fleet's id from the role list nor another binding."""
    engine, a, b = two_fleets
    with engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet_id)}"'))
        names = " ".join(conn.execute(text("SELECT rolname FROM pg_roles")).scalars())
        bindings = conn.execute(text("SELECT fleet_id FROM fleet_roles")).scalars().all()
    assert _readable(b.fleet_id) not in names and _readable(a.fleet_id) not in names
    assert bindings == [a.fleet_id]


def test_0013_replaces_fleet_named_roles_and_downgrades() -> None:
    """A database from before 0013 with a fleet role named after its fleet: the upgrade binds a new, random role
    that owner and console may still assume and that sees the fleet's rows, and drops the old one; the downgrade
    brings the old name back."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade
    from streams.infra.roles import CONSOLE_GROUP

    fleet = f"fleet-named-{uuid.uuid4().hex[:6]}"
    digest = hashlib.sha256(fleet.encode()).hexdigest()[:12]
    old = f"drivecoach_fleet_{_readable(fleet)}_{digest}"  # tenancy.py's naming before 0013
    with fresh_database(revision="0012") as url:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO fleets (fleet_id) VALUES (:f)"), {"f": fleet})
                conn.execute(text(f'CREATE ROLE "{old}" NOLOGIN IN ROLE drivecoach_console'))
                conn.execute(text(f'GRANT "{old}" TO CURRENT_USER, {CONSOLE_GROUP}'))
                conn.execute(text("INSERT INTO fleet_roles VALUES (:r, :f)"), {"r": old, "f": fleet})
            upgrade(url, "0013")
            with engine.begin() as conn:
                new = fleet_role(conn, fleet)
                assert new is not None and re.fullmatch(r"drivecoach_fleet_[0-9a-f]{32}", new)
                assert not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": old}).first()
                web = conn.execute(
                    text("SELECT pg_has_role(:w, :r, 'MEMBER')"), {"w": CONSOLE_GROUP, "r": new}
                ).scalar_one()
                assert web
                conn.execute(text(f'SET LOCAL ROLE "{new}"'))
                assert conn.execute(text("SELECT fleet_id FROM fleets")).scalars().all() == [fleet]
            command.downgrade(alembic_config(url), "0012")
            with engine.begin() as conn:
                assert fleet_role(conn, fleet) == old
                assert not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": new}).first()
        finally:
            engine.dispose()
