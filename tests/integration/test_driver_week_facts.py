"""driver_week_facts (migration 0021) stays exact: after random sequences of the writes that change scores (the
sink's clips and answers, re-answers, clip revisions, reviews, coaching, severities, the retention job's deletes)
the table equals its recomputation from clips and event_facts, and `safety_scores` answers what the query it
replaced (kept below as the reference) answered, under the fleet's role, with default and a fleet's own weights."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from importlib import import_module
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import sessionmaker

from schemas.messages import ClipMessage
from schemas.taxonomy import EventType
from streams.bench.report_data import generate_report_data
from streams.console.reports import Filters, safety_scores, score_weeks
from streams.console.review import EventIn, ReviewError, ReviewIn, apply_review
from streams.console.safety_score import COUNTED_STATUSES, ScoreSettings, WeekScore, week_score
from streams.inference.sink import write_result
from streams.infra.tenancy import ensure_fleet_role, fleet_connection
from streams.retention.store import delete_results
from tests.integration.console_data import answer_for, clip_message

pytestmark = pytest.mark.integration

MIGRATION = import_module("schemas.migrations.versions.0021_driver_week_facts")
MONDAY = datetime(2026, 11, 2, tzinfo=UTC)
TYPES = [EventType.PHONE_USE, EventType.SPEEDING, EventType.DROWSINESS, EventType.FOLLOWING_DISTANCE]
WINDOW = (MONDAY.date() - timedelta(days=7), MONDAY.date() + timedelta(days=28))


def reference_scores(conn: Connection, filters: Filters, settings: ScoreSettings) -> list[WeekScore]:
    """`safety_scores` before migration 0021: the counted events grouped from event_facts, the driving from clips."""
    weeks = score_weeks(filters)
    assert weeks.fleet is not None and weeks.since is not None and weeks.until is not None
    params: dict[str, Any] = {
        "fleet": weeks.fleet,
        "since": weeks.since,
        "until": weeks.until,
        "since_ts": datetime.combine(weeks.since, time(), UTC).timestamp(),
        "until_ts": datetime.combine(weeks.until, time(), UTC).timestamp(),
        "counted": list(COUNTED_STATUSES),
    }
    narrow = ""
    for column, value in (("driver_id", weeks.driver), ("vehicle_id", weeks.vehicle)):
        if value is not None:
            narrow += f" AND {column} = :{column}"
            params[column] = value
    counts: dict[tuple[str, date], dict[str, int]] = {}
    for r in conn.execute(
        text(f"""SELECT driver_id, date_trunc('week', day)::date AS week, type, count(*) AS events FROM event_facts
                 WHERE fleet_id = :fleet AND day >= :since AND day < :until AND driver_id IS NOT NULL
                       AND coaching_status IN :counted{narrow}
                 GROUP BY 1, 2, 3""").bindparams(bindparam("counted", expanding=True)),
        params,
    ):
        counts.setdefault((r.driver_id, r.week), {})[r.type] = int(r.events)
    driving = conn.execute(
        text(f"""SELECT driver_id, date_trunc('week', to_timestamp(start_ts) AT TIME ZONE 'UTC')::date AS week,
                        sum(end_ts - start_ts) / 3600.0 AS hours,
                        CASE WHEN count(distance_km) = count(*) THEN sum(distance_km) END AS km
                 FROM clips
                 WHERE fleet_id = :fleet AND start_ts >= :since_ts AND start_ts < :until_ts
                       AND driver_id IS NOT NULL{narrow}
                 GROUP BY 1, 2"""),
        params,
    )
    scores = []
    for r in driving:
        score = week_score(
            r.driver_id,
            r.week,
            counts.get((r.driver_id, r.week), {}),
            km=None if r.km is None else float(r.km),
            hours=float(r.hours),
            settings=settings,
        )
        if score is not None:
            scores.append(score)
    return sorted(scores, key=lambda s: (-s.week.toordinal(), s.score, s.driver_id or ""))


def _table(conn: Connection, source: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(text(f"SELECT * FROM ({source}) t ORDER BY {MIGRATION.KEY}"))]


def assert_exact(engine: Engine) -> None:
    """The table equals its recomputation (numeric sums: exact), as the owner, every fleet."""
    columns = f"{MIGRATION.KEY}, clips, seconds, km_clips, km, events"
    with engine.connect() as conn:
        kept = _table(conn, f"SELECT {columns} FROM driver_week_facts")
        assert kept == _table(conn, MIGRATION.RECOMPUTE)
        assert not any(r[4] == 0 and r[8] == {} for r in kept)  # rows left with nothing are deleted


def _same_scores(got: list[WeekScore], want: list[WeekScore]) -> None:
    assert [(s.driver_id, s.week, s.score, s.points, s.per, s.lines) for s in got] == [
        (s.driver_id, s.week, s.score, s.points, s.per, s.lines) for s in want
    ]
    for g, w in zip(got, want, strict=True):
        assert g.hours == pytest.approx(w.hours, rel=1e-12)
        assert (g.km is None and w.km is None) or g.km == pytest.approx(w.km, rel=1e-12)


def assert_scores_as_before(engine: Engine, fleet: str, drivers: list[str], vehicles: list[str]) -> None:
    since, until = WINDOW
    windows = [
        Filters(fleet=fleet, since=since, until=until),
        Filters(fleet=fleet, since=since + timedelta(days=10), until=since + timedelta(days=17)),
        Filters(fleet=fleet, driver=drivers[0], since=since, until=until),
        Filters(fleet=fleet, vehicle=vehicles[0], since=since, until=until),
    ]
    own = ScoreSettings.with_overrides({"phone_use": 7.5, "speeding": 0.0}, 12.0, 9.0)
    with fleet_connection(engine, fleet) as conn:
        for filters in windows:
            for settings in (ScoreSettings(), own):
                _same_scores(
                    safety_scores(conn, filters, settings), reference_scores(conn, filters, settings)
                )


class World:
    """Two fleets' clips, written and changed at random the ways production does."""

    def __init__(self, engine: Engine, rng: random.Random) -> None:
        self.engine, self.rng = engine, rng
        self.factory = sessionmaker(engine)
        tag = uuid.uuid4().hex[:6]
        self.fleets = [f"fleet-dwf-{tag}-{k}" for k in range(2)]
        self.drivers = {f: [f"{f}/d{k}" for k in range(3)] for f in self.fleets}
        self.vehicles = {f: [f"{f}/v{k}" for k in range(2)] for f in self.fleets}
        self.clips: dict[str, ClipMessage] = {}
        self.models: dict[str, int] = {}
        self.serial = 0

    def _start(self) -> float:
        day = MONDAY + timedelta(days=self.rng.randrange(21))
        if self.rng.random() < 0.3:  # late on a Sunday: its events fall in the next week
            day = MONDAY + timedelta(days=6 + 7 * self.rng.randrange(3), hours=23, minutes=59, seconds=30)
            return day.timestamp()
        return (day + timedelta(hours=self.rng.uniform(5, 21))).timestamp()

    def _km(self) -> float | None:
        return None if self.rng.random() < 0.25 else round(self.rng.uniform(0.1, 3.0), 6)

    def _types(self) -> list[EventType]:
        return [self.rng.choice(TYPES) for _ in range(self.rng.randrange(4))]

    def new_clip(self, start: float | None = None, types: list[EventType] | None = None) -> ClipMessage:
        fleet = self.rng.choice(self.fleets)
        self.serial += 1
        driver = self.rng.choice(self.drivers[fleet]) if start or self.rng.random() > 0.1 else None
        seconds = self.rng.choice([60.0, 45.5, 10.25]) if start is None else 60.0
        clip = clip_message(
            fleet,
            f"{fleet}-c{self.serial}",
            self.rng.choice(self.vehicles[fleet]),
            driver,
            self._start() if start is None else start,
            seconds,
            1,
            self._km(),
        )
        self.clips[clip.clip_id] = clip
        self.models[clip.clip_id] = 1
        events = self._types() if types is None else types
        write_result(self.factory, clip=clip, result=answer_for(clip, "dwf-m1", events, seconds))
        return clip

    def revise(self, clip: ClipMessage) -> None:
        """A late upload rebuilds the clip (0008): longer, another distance, at times another driver."""
        seconds = clip.end_ts - clip.start_ts + self.rng.choice([5.0, 30.5])
        driver = (
            self.rng.choice([*self.drivers[clip.fleet_id], None])
            if self.rng.random() < 0.3
            else clip.driver_id
        )
        revised = clip_message(
            clip.fleet_id,
            clip.clip_id,
            clip.vehicle_id,
            driver,
            clip.start_ts,
            seconds,
            clip.revision + 1,
            self._km(),
        )
        self.clips[clip.clip_id] = revised
        model = f"dwf-m{self.models[clip.clip_id]}"
        write_result(self.factory, clip=revised, result=answer_for(revised, model, self._types(), seconds))

    def reanswer(self, clip: ClipMessage) -> None:
        self.models[clip.clip_id] += 1
        result = answer_for(
            clip, f"dwf-m{self.models[clip.clip_id]}", self._types(), clip.end_ts - clip.start_ts
        )
        write_result(self.factory, clip=clip, result=result)

    def review(self, clip: ClipMessage, action: str | None = None) -> None:
        action = action or self.rng.choice(["accept", "correct", "dismiss", "coached"])
        with self.engine.begin() as conn:
            inference = conn.execute(
                text("SELECT inference_id FROM answer_facts WHERE clip_id = :c"), {"c": clip.clip_id}
            ).scalar()
            if inference is None:
                return
            events = [EventIn(type=t, start=1, end=2) for t in self._types()] if action == "correct" else None
            try:
                apply_review(
                    conn,
                    fleet_id=clip.fleet_id,
                    reviewer="dwf",
                    inference_id=inference,
                    clip_duration=clip.end_ts - clip.start_ts,
                    review=ReviewIn(action=action, events=events),
                )
            except ReviewError:  # "coached" with nothing waiting for coaching is refused, as on the page
                assert action == "coached"

    def retention(self, clip: ClipMessage) -> None:
        """What `drivecoach retention run` deletes, in its statements and under its role: the answers, and at
        times the clip's row too."""
        with self.engine.begin() as conn:
            conn.execute(text("SET LOCAL ROLE drivecoach_retention"))
            assert delete_results(conn, uuid.uuid4(), clip.fleet_id, clip.clip_id) is not None
            if self.rng.random() < 0.5:
                conn.execute(
                    text("DELETE FROM coaching_session_clips WHERE clip_id = :c"), {"c": clip.clip_id}
                )
                conn.execute(
                    text("DELETE FROM clips WHERE clip_id = :c AND fleet_id = :f"),
                    {"c": clip.clip_id, "f": clip.fleet_id},
                )
                del self.clips[clip.clip_id]

    def severity(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE event_types SET severity = severity WHERE type = :t"),
                {"t": self.rng.choice(TYPES).value},
            )

    def step(self) -> None:
        if len(self.clips) < 4 or self.rng.random() < 0.3:
            self.new_clip()
            return
        clip = self.clips[self.rng.choice(sorted(self.clips))]
        kind = self.rng.choices(
            ["revise", "reanswer", "review", "retention", "severity"], weights=[3, 2, 6, 1, 1]
        )[0]
        if kind == "severity":
            self.severity()
        else:
            getattr(self, kind)(clip)


@pytest.fixture(scope="module")
def engine(own_database_url: str) -> Iterator[Engine]:
    engine = create_engine(own_database_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("seed", [3, 11])
def test_random_writes_keep_the_facts_exact_and_the_scores_as_before(engine: Engine, seed: int) -> None:
    world = World(engine, random.Random(seed))
    with engine.begin() as conn:
        for fleet in world.fleets:
            ensure_fleet_role(conn, fleet)
    last_sunday = (MONDAY + timedelta(days=20, hours=23, minutes=59, seconds=30)).timestamp()
    sunday = world.new_clip(last_sunday, [EventType.SPEEDING] * 3)  # 2 events in the week after
    world.review(sunday, "accept")
    del world.clips[sunday.clip_id]  # left as it is: a row of counted events without driving
    for _ in range(4):
        for _ in range(30):
            world.step()
        assert_exact(engine)
        for fleet in world.fleets:
            assert_scores_as_before(engine, fleet, world.drivers[fleet], world.vehicles[fleet])
    with engine.connect() as conn:  # the sequence reached every case it is meant to check
        kept = conn.execute(
            text("SELECT clips, events FROM driver_week_facts WHERE fleet_id = ANY(:f)"), {"f": world.fleets}
        ).all()
        reviewed = conn.execute(text("SELECT count(*) FROM reviews WHERE reviewer = 'dwf'")).scalar_one()
    assert any(r.clips == 0 for r in kept) and any(r.events for r in kept) and reviewed > 10


def test_a_fleet_sees_only_its_own_rows_and_cannot_write_them(engine: Engine) -> None:
    world = World(engine, random.Random(5))
    for _ in range(8):
        world.new_clip()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE events SET coaching_status = 'needs_coaching' WHERE fleet_id = ANY(:f)"),
            {"f": world.fleets},
        )
        role = ensure_fleet_role(conn, world.fleets[0])
    with engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        seen = set(conn.execute(text("SELECT DISTINCT fleet_id FROM driver_week_facts")).scalars())
        assert seen == {world.fleets[0]}
    for statement in (
        "DELETE FROM driver_week_facts",
        "UPDATE driver_week_facts SET clips = 0",
        "INSERT INTO driver_week_facts (fleet_id, week, driver_id, vehicle_id) "
        f"VALUES ('{world.fleets[0]}', '2026-11-02', 'd', 'v')",
    ):
        with pytest.raises(Exception, match="permission denied"), engine.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{role}"'))
            conn.execute(text(statement))
    assert_exact(engine)


def test_bulk_loads_keep_the_facts_exact(engine: Engine) -> None:
    """`bench reports`' generator: INSERT ... SELECT of thousands of rows per statement, a distance backfill
    (UPDATE of every clip), re-answers and reviews in bulk."""
    prefix = f"dwf{uuid.uuid4().hex[:4]}"
    end = date(2026, 1, 2)
    with engine.connect() as conn:
        generate_report_data(conn, prefix=prefix, events=3_000, fleets=2, days=60, end_day=end)
    assert_exact(engine)
    with engine.begin() as conn:
        fleets = list(
            conn.execute(
                text("SELECT fleet_id FROM fleets WHERE fleet_id LIKE :p"), {"p": f"{prefix}%"}
            ).scalars()
        )
        for fleet in fleets:
            ensure_fleet_role(conn, fleet)
    for fleet in fleets:
        with fleet_connection(engine, fleet) as conn:
            filters = Filters(fleet=fleet, since=end - timedelta(days=55), until=end + timedelta(days=1))
            got = safety_scores(conn, filters, ScoreSettings())
            _same_scores(got, reference_scores(conn, filters, ScoreSettings()))
        assert len(got) > 10


def test_0021_backfills_downgrades_and_upgrades_again() -> None:
    """0020 -> 0021 on a database holding data: the backfill equals the recomputation (and the scores the old
    query's); down to 0020 drops the table and its functions; up again rebuilds the same rows."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade
    from tests.conftest import fresh_database

    end = date(2026, 1, 2)
    with fresh_database(revision="0020") as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                generate_report_data(conn, prefix="dwfm", events=2_000, fleets=2, days=30, end_day=end)
            upgrade(url)
            assert_exact(engine)
            with engine.connect() as conn:
                rows = _table(conn, "SELECT * FROM driver_week_facts")
                fleet = conn.execute(text("SELECT min(fleet_id) FROM driver_week_facts")).scalar_one()
                filters = Filters(fleet=fleet, since=end - timedelta(days=27), until=end + timedelta(days=1))
                got = safety_scores(conn, filters, ScoreSettings())
                _same_scores(got, reference_scores(conn, filters, ScoreSettings()))
            assert len(rows) > 20 and got
            command.downgrade(alembic_config(url), "0020")
            with engine.connect() as conn:
                assert conn.execute(text("SELECT to_regclass('driver_week_facts')")).scalar() is None
                left = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'drivecoach_driver_week_facts%'"
                assert conn.execute(text(left)).scalar_one() == 0
            upgrade(url)
            with engine.connect() as conn:
                assert _table(conn, "SELECT * FROM driver_week_facts") == rows
        finally:
            engine.dispose()
