"""`drivecoach bench reports` on a small scale against the real Postgres, and the views migration 0005 rewrote for
speed compared with their earlier definitions on the benchmark's generated data (plus the rare cases it lacks)."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from datetime import date

import psycopg
import pytest
from sqlalchemy import create_engine, text

from streams.bench.report_data import generate_report_data
from streams.bench.reports import bench_reports
from streams.infra.tenancy import ensure_fleet_role
from streams.settings import Settings
from tests.conftest import LOCAL_PG, fresh_database
from tests.integration.facts import differing_rows

pytestmark = pytest.mark.integration
SERVER = LOCAL_PG.replace("postgresql://", "postgresql+psycopg://")
QUERIES = {
    "event_rates driver/week, 28 days",
    "event_rates fleet/day, 28 days",
    "trend driver, 7 days vs previous 7",
    "review_queue, 50",
    "safety scores, 8 weeks",
    "console dashboard (28 days)",
    "console clip_detail (random clip)",
}


def test_bench_reports_times_every_query_and_drops_its_database(tmp_path) -> None:
    result = bench_reports(
        Settings(home=tmp_path, database_url=f"{SERVER}/postgres"), events=5_000, fleets=3, repeat=3
    )
    assert result.rows["events"] == 5_000
    assert all(result.rows[t] > 0 for t in ("clips", "segments", "inferences", "instructions", "reviews"))
    assert result.rows["inferences"] > result.rows["clips"]  # some clips answered again by a newer model
    assert {(q.query, q.rls) for q in result.queries} == {
        (name, rls) for name in QUERIES for rls in (True, False)
    }
    for q in result.queries:
        assert len(q.timings_ms) == 3 and all(t > 0 for t in q.timings_ms), q
        assert q.p50_ms <= q.p95_ms <= q.max_ms, q
        assert q.rows > 0, q  # every query found something in the measured fleet
    rows = {(q.query, q.rls): q.rows for q in result.queries}
    for name in (
        "event_rates driver/week, 28 days",
        "event_rates fleet/day, 28 days",
        "trend driver, 7 days vs previous 7",
        "review_queue, 50",
        "safety scores, 8 weeks",
    ):
        assert rows[(name, True)] == rows[(name, False)], (
            name
        )  # they name the fleet: the owner sees the same rows
    with psycopg.connect(f"{LOCAL_PG}/postgres") as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (result.database,)).fetchone()
        assert not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (result.fleet_role,)).fetchone()


def _rare_cases(conn, fleet: str) -> None:
    """What the generator never makes: events that cross midnight, offsets outside the clip, a clip without
    segments, one whose road camera lacks a distance (the driver camera's counts) and one with two road segments."""
    vehicle, day = f"{fleet}-rare", 1_767_225_600.0  # 2026-01-01 00:00 UTC
    conn.execute(
        text("INSERT INTO vehicles (vehicle_id, fleet_id) VALUES (:v, :f)"), {"v": vehicle, "f": fleet}
    )
    clips = [
        ("late", day - 30, [(10.0, "phone_use"), (45.0, "speeding"), (-5.0, "drowsiness")]),  # 23:59:30
        ("early", day + 2, [(-5.0, "distraction"), (90_000.0, "smoking"), (4_000.0, "harsh_turn")]),
        ("plain", day + 3_600, [(1.0, "rolling_stop")]),
    ]
    for name, start, events in clips:
        clip = f"{fleet}-{name}"
        conn.execute(
            text("""INSERT INTO clips (clip_id, fleet_id, vehicle_id, start_ts, end_ts, views, frames_uri,
                                                num_frames, frame_width, frame_height, sample_fps)
                             VALUES (:c, :f, :v, :s, :s + 60, '[]', 'file:///x', 1, 28, 28, 2)"""),
            {"c": clip, "f": fleet, "v": vehicle, "s": start},
        )
        inference = conn.execute(
            text("""INSERT INTO inferences (fleet_id, clip_id, model_version, prompt_version,
                                             valid, description, raw_turn1, raw_turn2, latency_ms, prompt_tokens,
                                             generated_tokens)
                                         VALUES (:f, :c, 'bench-m1', 'cot-v1', true, '', '', '', 1, 1, 1)
                                         RETURNING id"""),
            {"f": fleet, "c": clip},
        ).scalar_one()
        for offset, event_type in events:
            conn.execute(
                text("""INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s)
                                 VALUES (:f, :i, :t, 'road', :s, :s + 1)"""),
                {"f": fleet, "i": inference, "t": event_type, "s": offset},
            )
    segments = [
        ("late", "road", 0, 30, None),
        ("late", "driver", 0, 60, 1.5),  # road unknown: driver's distance
        ("early", "road", 0, 30, 0.4),
        ("early", "road", 30, 90, 1.2),
    ]  # two road segments, one overlapping
    for clip, camera, start, end, km in segments:
        start_ts = conn.execute(
            text("SELECT start_ts FROM clips WHERE clip_id = :c"), {"c": f"{fleet}-{clip}"}
        ).scalar_one()
        segment = f"{fleet}-{clip}-{camera}-{start}"
        conn.execute(
            text("""INSERT INTO segments (segment_id, fleet_id, vehicle_id, camera, start_ts, end_ts,
                                                   video_uri, distance_km)
                             VALUES (:s, :f, :v, :cam, :a, :b, 'file:///s', :km)"""),
            {
                "s": segment,
                "f": fleet,
                "v": vehicle,
                "cam": camera,
                "a": start_ts + start,
                "b": start_ts + end,
                "km": km,
            },
        )
        conn.execute(
            text("INSERT INTO clip_segments (clip_id, segment_id, fleet_id) VALUES (:c, :s, :f)"),
            {"c": f"{fleet}-{clip}", "s": segment, "f": fleet},
        )


@pytest.fixture
def scratch_url() -> Iterator[str]:
    """A database of its own: the generated fleets' reviews point at frames that do not exist, which the training
    export (and anything else reading every fleet) must not meet in the shared test database."""
    with fresh_database() as url:
        yield url


def test_rewritten_views_give_the_rows_of_their_earlier_definitions(scratch_url: str) -> None:
    database_url = scratch_url
    m = importlib.import_module("schemas.migrations.versions.0005_report_indexes")
    engine = create_engine(database_url)
    prefix = f"eq{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn:
        generate_report_data(conn, prefix=prefix, events=3_000, fleets=2, days=30, end_day=date(2026, 1, 2))
        _rare_cases(conn, f"{prefix}-f00")
        # Those segments were written by hand: store the clips' distance as the sink does (0006 reads it).
        conn.execute(text(importlib.import_module("schemas.migrations.versions.0006_clip_distance").BACKFILL))
        conn.commit()
    pairs = {  # columns compared (distances rounded: the same sums may be added in another order)
        "report_events": ("*", m.REPORT_EVENTS_0002),
        "report_driving": (
            "fleet_id, vehicle_id, driver_id, day, seconds, round(km::numeric, 9) AS km, km_seconds",
            m.REPORT_DRIVING_0003,
        ),
        "review_queue": ("*", m.REVIEW_QUEUE_0002),
    }
    fleets = [f"{prefix}-f00", f"{prefix}-f01"]
    with engine.begin() as conn:
        role = ensure_fleet_role(conn, fleets[0])
    for as_role in (
        None,
        role,
    ):  # as the owner (both fleets), and under the first fleet's role (row-level security)
        with engine.begin() as conn:
            if as_role:
                conn.execute(text(f'SET LOCAL ROLE "{as_role}"'))
            for view, (columns, before) in pairs.items():
                total, differ = differing_rows(conn, view, before, fleets, columns)
                assert total > 0 and differ == 0, (view, as_role, total, differ)
            days = dict(
                conn.execute(
                    text(
                        "SELECT type, day FROM report_events WHERE clip_id LIKE '%-late' "
                        "OR clip_id LIKE '%-early'"
                    )
                ).all()
            )
            assert days["phone_use"] == date(2025, 12, 31) and days["speeding"] == date(
                2026, 1, 1
            )  # midnight
            assert days["distraction"] == date(2025, 12, 31) and days["smoking"] == date(
                2026, 1, 2
            )  # outside
    engine.dispose()
    with psycopg.connect(f"{LOCAL_PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_dashboard_adds_up_to_the_reports(scratch_url: str) -> None:
    """The console's dashboard reads the window in one pass per view; its figures are the reports' figures."""
    from collections import Counter

    from streams.console.queries import dashboard
    from streams.console.reports import Filters, event_rates, trend

    engine = create_engine(scratch_url)
    prefix = f"db{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn:
        generate_report_data(conn, prefix=prefix, events=3_000, fleets=2, days=40, end_day=date(2026, 1, 2))
        conn.commit()
    fleet = f"{prefix}-f00"
    with engine.begin() as conn:
        board = dashboard(conn, fleet, days=28)
        window = Filters(fleet=fleet, since=board.since, until=board.until)
        rates = event_rates(conn, window, group="fleet", period="day")
        per_day, per_type = Counter(), Counter()
        for r in rates:
            per_day[r["period"]] += int(r["events"])
            per_type[r["type"]] += int(r["events"])
        assert board.until == date(2026, 1, 3) and sum(per_day.values()) > 0
        assert {d["day"]: d["events"] for d in board.days if d["events"]} == dict(per_day)
        assert {d["day"]: d["hours"] for d in board.days if d["events"]} == {
            r["period"]: round(float(r["hours"]), 2) for r in rates
        }
        assert {t["type"]: t["events"] for t in board.types} == dict(per_type)
        assert sum(board.statuses.values()) == sum(per_type.values())
        drivers = Counter()
        for r in trend(conn, window, group="driver"):
            drivers[r["who"] or "(unknown)"] += int(r["events"])
        assert {d["driver"]: d["events"] for d in board.drivers if d["events"]} == +drivers
        hours = conn.execute(
            text(
                "SELECT sum(seconds) / 3600.0 FROM report_driving WHERE fleet_id = :f "
                "AND day >= :a AND day < :b"
            ),
            {"f": fleet, "a": board.since, "b": board.until},
        )
        assert abs(sum(d["hours"] for d in board.drivers) - float(hours.scalar_one())) < 0.01 * len(
            board.drivers
        )
    engine.dispose()
