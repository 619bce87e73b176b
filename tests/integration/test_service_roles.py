"""The services' least-privilege logins (migrations 0011 and 0012, `drivecoach migrate --pipeline-login/
--console-login/--training-login`, issue 17 finding 7): everything the worker's sink and model registry do works
through the pipeline's login, the console's login reaches fleet data only as a fleet's role, the retraining job reads
every fleet's labels and writes only its runs and model versions, and what none of them ever does is refused. The
pipeline test runs its worker process through such a login, every console test its console
(tests/integration/console_data.py), and the retraining test its job (tests/integration/test_retrain.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import sessionmaker

from schemas.db import Inference, Instruction, ModelVersion, Review, TrainingRun
from schemas.prompts import format_turn1
from schemas.registry import promote, register, reject, serve_or_adopt
from schemas.taxonomy import EventType
from streams.errors import ConfigurationError
from streams.inference.sink import write_result
from streams.infra.roles import CONSOLE_GROUP, PIPELINE_GROUP, TRAINING_GROUP, ensure_login
from streams.infra.tenancy import ensure_fleet_role, fleet_role
from tests.conftest import fresh_database
from tests.integration.harness import service_login
from tests.integration.test_sink import _clip, _result
from training.export import reviewed_examples
from training.retrain import _finish, new_labels_since, open_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def owner_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def pipeline_url(owner_url: str) -> Iterator[str]:
    with service_login(owner_url, PIPELINE_GROUP) as url:
        yield url


@pytest.fixture
def console_url(owner_url: str) -> Iterator[str]:
    with service_login(owner_url, CONSOLE_GROUP) as url:
        yield url


@pytest.fixture
def training_url(owner_url: str) -> Iterator[str]:
    with service_login(owner_url, TRAINING_GROUP) as url:
        yield url


def test_the_worker_writes_everything_through_its_login(owner_url: str, pipeline_url: str) -> None:
    factory = sessionmaker(create_engine(pipeline_url))
    with factory() as s:
        assert (
            s.execute(
                text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            ).scalar()
            is False
        )
    serving = serve_or_adopt(
        factory, version="m-roles-1", path="/models/m1", demo=False
    )  # register + promote
    assert serving.version == "m-roles-1"
    clip = _clip(f"veh-roles-{uuid.uuid4().hex[:6]}")
    first = write_result(
        factory, clip=clip, result=_result(clip, "m-roles-1", [EventType.SPEEDING], "Slow down.")
    )
    # A replay, then a new revision with other events: upserts, and the old events deleted.
    write_result(factory, clip=clip, result=_result(clip, "m-roles-1", [EventType.SPEEDING], "Slow down."))
    revised = clip.model_copy(update={"revision": clip.revision + 1})
    second = write_result(factory, clip=revised, result=_result(revised, "m-roles-1", [], "Keep it up."))
    assert second != first
    owner = sessionmaker(create_engine(owner_url))
    with owner() as s:
        assert s.scalar(select(ModelVersion.stage).where(ModelVersion.version == "m-roles-1")) == "production"
        assert s.scalar(select(Inference.clip_revision).where(Inference.id == second)) == revised.revision
        assert s.scalar(select(Instruction.text).where(Instruction.inference_id == second)) == "Keep it up."
        # A manager reviews the answer: a replay through the login reads the review and leaves the answer alone.
        s.add(Review(inference_id=second, fleet_id=clip.fleet_id, reviewer="m", verdict="accepted"))
        s.commit()
    write_result(
        factory, clip=revised, result=_result(revised, "m-roles-1", [EventType.PHONE_USE], "Changed.")
    )
    with owner() as s:
        assert s.scalar(select(Instruction.text).where(Instruction.inference_id == second)) == "Keep it up."


def test_the_retraining_job_reads_every_fleets_labels_and_records_its_run(
    owner_url: str, training_url: str
) -> None:
    """What `training.retrain` does with the database, through its login: count and export the reviewed labels of
    every fleet, record its run, register a candidate and promote or reject it."""
    owner = sessionmaker(create_engine(owner_url))
    suffix = uuid.uuid4().hex[:6]
    clip_ids = []
    for fleet in (f"fleet-train-a-{suffix}", f"fleet-train-b-{suffix}"):
        clip = _clip(f"veh-{fleet}").model_copy(update={"fleet_id": fleet, "clip_id": f"clip-{fleet}"})
        answer = write_result(
            owner, clip=clip, result=_result(clip, "m-train", [EventType.SPEEDING], "Slow.")
        )
        with owner() as s:
            s.add(
                Review(
                    inference_id=answer,
                    fleet_id=fleet,
                    reviewer="m",
                    verdict="corrected",
                    corrected_turn1=format_turn1([]),
                )
            )
            s.commit()
        clip_ids.append(clip.clip_id)
    trainer = sessionmaker(create_engine(training_url))
    with trainer() as s:
        assert new_labels_since(s, None) >= 2
        examples, _ = reviewed_examples(s, cutoff=datetime.now(UTC))
    assert set(clip_ids) <= {e.clip_id for e in examples}
    current = serve_or_adopt(owner, version="m-train", path="/models/train", demo=False)
    run_id, fresh, _ = open_run(trainer, current)
    assert fresh >= 2
    register(trainer, version=f"m-cand-{suffix}", path="/models/cand", demo=False, metrics={"bleu": 1.0})
    promote(trainer, f"m-cand-{suffix}")
    register(trainer, version=f"m-worse-{suffix}", path="/models/worse", demo=False, metrics={"bleu": 0.0})
    reject(trainer, f"m-worse-{suffix}", "worse")
    _finish(trainer, run_id, status="succeeded", model_version=f"m-cand-{suffix}")
    with owner() as s:
        stages = dict(
            s.execute(
                select(ModelVersion.version, ModelVersion.stage).where(
                    ModelVersion.version.like(f"%{suffix}")
                )
            ).all()
        )
        assert stages == {f"m-cand-{suffix}": "production", f"m-worse-{suffix}": "rejected"}
        assert s.get(TrainingRun, run_id).status == "succeeded"


NEVER_BY_ANY = [
    "SELECT count(*) FROM answer_facts",
    "SELECT count(*) FROM driver_week_facts",
    "DELETE FROM clips",
    "TRUNCATE events",
    "UPDATE reviews SET verdict = 'rejected'",
    "DROP TABLE instructions",
    "ALTER TABLE clips DISABLE ROW LEVEL SECURITY",
    "CREATE TABLE stolen (x int)",
    "SELECT drivecoach_refresh_event_facts(ARRAY['x'])",
    "CREATE ROLE intruder",
    "SET ROLE postgres",
]
NEVER_BY_THE_WORKER = [
    "SELECT count(*) FROM managers",
    "SELECT count(*) FROM console_sessions",
    "SELECT count(*) FROM console_signin_throttle",
]
NEVER_BY_THE_TRAINER = [
    "SELECT count(*) FROM managers",
    "SELECT count(*) FROM console_sessions",
    "SELECT count(*) FROM events",  # labels come from reviews and answers, never from the event tables
    "INSERT INTO reviews (inference_id, fleet_id, reviewer, verdict) VALUES (1, 'f', 'x', 'accepted')",
    "UPDATE inferences SET raw_turn2 = 'x'",
    "UPDATE clips SET frames_uri = 'x'",
    "DELETE FROM training_runs",
    "DELETE FROM model_versions",
    "INSERT INTO fleets (fleet_id) VALUES ('made-up')",
]
NEVER_BY_THE_CONSOLE = [
    "SELECT count(*) FROM clips",  # fleet data: only as a fleet's role
    "SELECT count(*) FROM events",
    "INSERT INTO fleets (fleet_id) VALUES ('made-up')",
    "UPDATE managers SET password_hash = 'x'",
    "INSERT INTO managers (username, fleet_id, display_name, password_hash) VALUES ('x', 'f', 'x', 'x')",
    "INSERT INTO model_versions (version, path, metrics) VALUES ('x', '', '{}')",
]


@pytest.mark.parametrize(
    ("login", "statement"),
    [("pipeline_url", s) for s in NEVER_BY_ANY + NEVER_BY_THE_WORKER]
    + [("console_url", s) for s in NEVER_BY_ANY + NEVER_BY_THE_CONSOLE]
    + [("training_url", s) for s in NEVER_BY_ANY + NEVER_BY_THE_TRAINER],
)
@pytest.mark.attack("direct_sql")
def test_a_service_login_is_refused_what_its_service_never_does(
    login: str, statement: str, request: pytest.FixtureRequest
) -> None:
    engine = create_engine(request.getfixturevalue(login))
    try:
        with engine.connect() as conn, pytest.raises(ProgrammingError) as refused:
            conn.execute(text(statement))
        assert any(
            words in str(refused.value)
            for words in ("permission denied", "must be owner", "row-level security")
        ), str(refused.value)
    finally:
        engine.dispose()


@pytest.mark.attack("direct_sql")
def test_the_console_login_sees_a_fleet_only_as_that_fleet(owner_url: str) -> None:
    """Fleet roles made after the login (add-manager) are granted to `drivecoach_web` at once; as one, the login
    sees that fleet's rows and no other's."""
    owner = create_engine(owner_url)
    suffix = uuid.uuid4().hex[:6]
    fleets = [f"fleet-web-a-{suffix}", f"fleet-web-b-{suffix}"]
    factory = sessionmaker(owner)
    for fleet in fleets:
        clip = _clip(f"veh-{fleet}").model_copy(update={"fleet_id": fleet, "clip_id": f"clip-{fleet}"})
        write_result(factory, clip=clip, result=_result(clip, "m-web", [EventType.SPEEDING], "Slow down."))
    with service_login(owner_url, CONSOLE_GROUP) as url:
        with owner.begin() as conn:
            for fleet in fleets:
                ensure_fleet_role(conn, fleet)
        console = create_engine(url)
        try:
            with console.begin() as conn:
                conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, fleets[0])}"'))
                seen = set(conn.scalars(text("SELECT fleet_id FROM clips")))
            assert seen == {fleets[0]}
        finally:
            console.dispose()
    owner.dispose()


def test_a_login_needs_a_password(owner_url: str) -> None:
    with pytest.raises(ConfigurationError, match="password"):
        ensure_login(create_engine(owner_url), "dc_pipeline_nopass", "", PIPELINE_GROUP)


def test_0011_downgrades_and_upgrades_again() -> None:
    """The role is cluster-wide and outlives a downgrade (other databases may use it); its grants and policies here
    go and come back."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade

    with fresh_database() as url:
        engine = create_engine(url)

        def state() -> tuple[int, bool, bool]:
            with engine.connect() as conn:
                policies = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_policies WHERE policyname IN ('pipeline_writes', 'console_lookup')"
                    )
                ).scalar_one()
                writes = conn.execute(
                    text("SELECT has_table_privilege('drivecoach_pipeline', 'clips', 'INSERT')")
                ).scalar_one()
                signs_in = conn.execute(
                    text("SELECT has_table_privilege('drivecoach_web', 'console_sessions', 'INSERT')")
                ).scalar_one()
            return policies, writes, signs_in

        try:  # pipeline_writes on 0011's 11 tables and on rule_events (0023), console_lookup
            assert state() == (13, True, True)
            command.downgrade(alembic_config(url), "0010")
            assert state() == (0, False, False)
            upgrade(url)
            assert state() == (13, True, True)
        finally:
            engine.dispose()


def test_migrate_makes_the_service_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    """`drivecoach migrate --pipeline-login A --console-login B`: the schema, then the logins; refused up front
    without their passwords. The console then starts through its login on the migrated schema, and refuses with what
    to do on a schema that is behind (its login may not migrate)."""
    from alembic.script import ScriptDirectory
    from typer.testing import CliRunner

    from schemas.migrations import alembic_config
    from streams.cli import app
    from streams.infra.database import SchemaBehind, migrate_unless_current

    worker, web = f"dc_pipeline_{uuid.uuid4().hex[:8]}", f"dc_web_{uuid.uuid4().hex[:8]}"
    options = ["migrate", "--pipeline-login", worker, "--console-login", web]
    with fresh_database(revision="0010") as url:
        monkeypatch.setenv("DRIVECOACH_DATABASE_URL", url)
        monkeypatch.setenv("DRIVECOACH_PIPELINE_DB_PASSWORD", "pw")
        monkeypatch.delenv("DRIVECOACH_CONSOLE_DB_PASSWORD", raising=False)
        refused = CliRunner().invoke(app, options)
        assert refused.exit_code == 2 and "DRIVECOACH_CONSOLE_DB_PASSWORD" in refused.output
        engine = create_engine(url)
        try:
            ensure_login(engine, web, "pw", CONSOLE_GROUP)  # a console login left from an older release
            with pytest.raises(SchemaBehind, match="drivecoach migrate"):
                migrate_unless_current(make_url(url).set(username=web).render_as_string(hide_password=False))
            monkeypatch.setenv("DRIVECOACH_CONSOLE_DB_PASSWORD", "pw2")
            made = CliRunner().invoke(app, options)
            assert made.exit_code == 0, made.output
            with engine.connect() as conn:
                members = [
                    conn.execute(
                        text("SELECT pg_has_role(:l, :g, 'MEMBER')"), {"l": login, "g": group}
                    ).scalar_one()
                    for login, group in ((worker, PIPELINE_GROUP), (web, CONSOLE_GROUP))
                ]
                head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            assert (
                members == [True, True]
                and head == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            )
            migrate_unless_current(make_url(url).set(username=web).render_as_string(hide_password=False))
        finally:
            with engine.connect() as conn:
                for login in (worker, web):
                    conn.execute(text(f'DROP ROLE IF EXISTS "{login}"'))
                conn.commit()
            engine.dispose()
