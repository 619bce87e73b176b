"""`drivecoach bench reports`: report and console queries on a scratch database of generated events, p50/p95
per query, the fleet's role against the table owner."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from streams.infra.database import drop_scratch_database, scratch_database
from streams.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection

from streams.bench.report_data import _TABLES, generate_report_data


@dataclass(frozen=True)
class QueryTiming:
    query: str
    rls: bool  # True: under the fleet's role (row-level security), as the console and `drivecoach report` run it
    rows: int  # rows the query returned (dashboard: the rows of all its parts; clip_detail: 1 + events + reviews)
    timings_ms: tuple[float, ...]  # wall ms per run, after one warm-up run

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.timings_ms, 50))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.timings_ms, 95))

    @property
    def max_ms(self) -> float:
        return max(self.timings_ms)


@dataclass(frozen=True)
class ReportsBench:
    database: str  # the scratch database (dropped at the end unless kept)
    fleet_id: str  # the fleet whose manager is simulated: the median fleet by events
    fleet_events: int
    fleet_role: str  # its Postgres role (dropped with the database)
    end_day: date  # the newest day of data; windows end there
    rows: dict[str, int]  # rows generated per table
    generate_s: float  # wall: every INSERT ... SELECT
    analyze_s: float  # wall: VACUUM ANALYZE of the generated tables
    queries: tuple[QueryTiming, ...]


def _timed(
    run: Callable[[Connection], int], connect: Callable[[], AbstractContextManager[Connection]], repeat: int
) -> tuple[int, list[float]]:
    """One warm-up run, then `repeat` runs, each in its own transaction as a console page opens one."""
    timings, rows = [], 0
    for k in range(repeat + 1):
        with connect() as conn:
            started = time.perf_counter()
            rows = run(conn)
            if k:
                timings.append((time.perf_counter() - started) * 1000.0)
    return rows, timings


def time_report_queries(
    engine: Engine,
    fleet_id: str,
    end_day: date,
    *,
    repeat: int = 30,
    owner: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[QueryTiming]:
    """Each query a safety manager's page or report runs, for `fleet_id` with windows ending `end_day`: under the
    fleet's role (its role must exist: `tenancy.ensure_fleet_role`), then as the connecting owner when `owner`."""
    from sqlalchemy import text

    from streams.console.queries import clip_detail, dashboard
    from streams.console.reports import (
        Filters,
        event_rates,
        review_queue,
        safety_scores,
        score_settings,
        trend,
    )
    from streams.infra.tenancy import fleet_connection

    say = progress or (lambda _msg: None)
    with engine.begin() as conn:
        clip_ids = list(
            conn.execute(
                text("SELECT clip_id FROM clips WHERE fleet_id = :f ORDER BY clip_id"), {"f": fleet_id}
            ).scalars()
        )
    picks = [clip_ids[int(k)] for k in np.random.default_rng(7).integers(0, len(clip_ids), repeat + 1)]
    month = Filters(fleet=fleet_id, since=end_day - timedelta(days=27), until=end_day + timedelta(days=1))
    week = Filters(fleet=fleet_id, since=end_day - timedelta(days=6), until=end_day + timedelta(days=1))
    weeks8 = Filters(fleet=fleet_id, since=end_day - timedelta(days=55), until=end_day + timedelta(days=1))
    clips = iter(picks)

    def detail(conn: Connection) -> int:
        found = clip_detail(conn, next(clips))
        return 0 if found is None else 1 + len(found.events) + len(found.reviews)

    def board(conn: Connection) -> int:
        b = dashboard(conn, fleet_id)
        return len(b.days) + len(b.types) + len(b.drivers) + len(b.statuses) + len(b.queue) + len(b.scores)

    suite: list[tuple[str, Callable[[Connection], int]]] = [
        (
            "event_rates driver/week, 28 days",
            lambda c: len(event_rates(c, month, group="driver", period="week")),
        ),
        ("event_rates fleet/day, 28 days", lambda c: len(event_rates(c, month, group="fleet", period="day"))),
        ("trend driver, 7 days vs previous 7", lambda c: len(trend(c, week, group="driver"))),
        ("review_queue, 50", lambda c: len(review_queue(c, Filters(fleet=fleet_id), limit=50))),
        (
            "safety scores, 8 weeks",
            lambda c: len(safety_scores(c, weeks8, score_settings(c, fleet_id))),
        ),
        ("console dashboard (28 days)", board),
        ("console clip_detail (random clip)", detail),
    ]
    results = []
    for rls in (True, False) if owner else (True,):
        for name, run in suite:
            clips = iter(picks)  # the same random clips in both modes
            say(f"{'fleet role' if rls else 'table owner'}: {name}")
            connect = (lambda: fleet_connection(engine, fleet_id)) if rls else engine.begin
            count, timings = _timed(run, connect, repeat)
            results.append(QueryTiming(name, rls, count, tuple(timings)))
    return results


def bench_reports(
    settings: Settings,
    *,
    events: int = 1_000_000,
    fleets: int = 20,
    repeat: int = 30,
    days: int = 90,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ReportsBench:
    """The safety managers' queries on a scratch database holding `events` detected events over `days` days.

    A fresh database on the configured server (DRIVECOACH_DATABASE_URL's, else the local one, else the embedded
    one) is migrated to head and filled in SQL (`generate_report_data`), then VACUUM ANALYZEd. The median fleet by
    events gets its Postgres role, and each query the console and `drivecoach report` run is timed in wall ms
    (the work happens in the server) under that role (row-level security on), and again as the table owner (no
    row-level security; same SQL and filters) for comparison (`time_report_queries`). The database (and the
    fleet's role) is dropped at the end unless `keep`.
    """
    from sqlalchemy import create_engine, text

    from streams.infra.database import migrate
    from streams.infra.tenancy import ensure_fleet_role

    say = progress or (lambda _msg: None)
    run_id = uuid.uuid4().hex[:6]
    database = scratch_database(settings, f"drivecoach_bench_{run_id}")
    role: str | None = None
    engine = create_engine(database.url, pool_size=2, max_overflow=0)
    try:
        say(f"migrating the scratch database {database.url.database}")
        migrate(database.url)
        end_day = datetime.now(UTC).date()
        started = time.perf_counter()
        with engine.connect() as conn:
            rows = generate_report_data(
                conn,
                prefix=f"bench{run_id}",
                events=events,
                fleets=fleets,
                days=days,
                end_day=end_day,
                progress=say,
            )
        generate_s = time.perf_counter() - started
        say("VACUUM ANALYZE")
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in _TABLES:
                conn.execute(text(f"VACUUM ANALYZE {table}"))
        analyze_s = time.perf_counter() - started
        with engine.begin() as conn:
            per_fleet = conn.execute(
                text("SELECT fleet_id, count(*) FROM events GROUP BY 1 ORDER BY 2, 1")
            ).all()
            fleet, fleet_events = per_fleet[len(per_fleet) // 2]
            role = ensure_fleet_role(conn, fleet)
        results = time_report_queries(engine, fleet, end_day, repeat=repeat, progress=say)
    finally:
        engine.dispose()
        if keep:
            say(f"kept {database.url.render_as_string(hide_password=True)}")
        else:
            drop_scratch_database(database, role)
        database.close()
    return ReportsBench(
        database=str(database.url.database),
        fleet_id=fleet,
        fleet_events=int(fleet_events),
        fleet_role=str(role),
        end_day=end_day,
        rows=rows,
        generate_s=generate_s,
        analyze_s=analyze_s,
        queries=tuple(results),
    )
