"""`drivecoach report`: the safety reports from the report views, under the fleet's role."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from streams.cli.options import build_settings, console

if TYPE_CHECKING:
    from streams.console.reports import Filters

app = typer.Typer()


@app.command()
def report(
    kind: Annotated[
        str,
        typer.Argument(
            help="events (per group and period, with rates per driving hour and per 100 km) | trend | queue | "
            "scores (each driver's safety score per week, with its formula) | coaching (each acknowledged session's "
            "effect: the driver's event rate before and after)"
        ),
    ] = "events",
    fleet: Annotated[str | None, typer.Option(help="fleet id")] = None,
    vehicle: Annotated[str | None, typer.Option(help="vehicle id")] = None,
    driver: Annotated[str | None, typer.Option(help="driver id")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="event type, e.g. phone_use")] = None,
    since: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[
        str | None, typer.Option(help="day after the last, YYYY-MM-DD (trend default: the last 7 days)")
    ] = None,
    group: Annotated[str, typer.Option(help="fleet | vehicle | driver")] = "driver",
    period: Annotated[str, typer.Option(help="day | week")] = "week",
    output: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Safety reports from Postgres (the views of migrations 0002 and 0003), as rich tables, CSV or JSON. `scores`
    covers the weeks that overlap --since/--until (default: the 28 days up to the fleet's last day of driving)."""
    from datetime import UTC, datetime

    from streams.console.reports import Filters, default_window

    _check_choices(kind=kind, group=group, period=period, format=output)
    first, last = _days(since, until)
    if kind == "trend" and (first is None or last is None):
        first, last = default_window(datetime.now(UTC).date())
    if fleet is None:
        _config_error(
            "--fleet is required: reports run under the fleet's Postgres role, which sees only that fleet's rows"
        )
    filters = Filters(
        fleet=fleet, vehicle=vehicle, driver=driver, event_type=event_type, since=first, until=last
    )
    rows = fetch_rows(kind, fleet, filters, group=group, period=period)
    print_rows(rows, title=f"{kind} ({len(rows)} rows)", output=output)


CHOICES = {
    "kind": ("events", "trend", "queue", "scores", "coaching"),
    "group": ("fleet", "vehicle", "driver"),
    "period": ("day", "week"),
    "format": ("table", "csv", "json"),
}


def _config_error(sentence: str) -> NoReturn:
    console.print(f"[red]configuration error:[/] {sentence}")
    raise typer.Exit(2)


def _check_choices(**given: str) -> None:
    for name, value in given.items():
        if value not in CHOICES[name]:
            _config_error(f"{name} must be one of {', '.join(CHOICES[name])}, not {value!r}")


def _days(since: str | None, until: str | None) -> tuple[date | None, date | None]:
    try:
        return (date.fromisoformat(since) if since else None), (date.fromisoformat(until) if until else None)
    except ValueError as err:
        _config_error(str(err))


def fetch_rows(kind: str, fleet: str, filters: Filters, *, group: str, period: str) -> list[dict[str, Any]]:
    """The report's rows, read under the fleet's role (created if this database has none yet)."""
    from sqlalchemy import create_engine, text

    from streams.console.coaching import effectiveness
    from streams.console.queries import latest_day
    from streams.console.reports import (
        event_rates,
        review_queue,
        safety_scores,
        score_rows,
        score_settings,
        trend,
    )
    from streams.infra.database import resolve_database_url
    from streams.infra.tenancy import ensure_fleet_role, fleet_connection

    database = resolve_database_url(build_settings())
    engine = create_engine(database.url)
    try:
        with engine.begin() as conn:
            if not conn.execute(text("SELECT to_regclass('fleet_roles')")).scalar():
                console.print(
                    "[red]error:[/] this database has no report views yet: run `drivecoach migrate`"
                )
                raise typer.Exit(1)
            if not conn.execute(text("SELECT 1 FROM fleets WHERE fleet_id = :f"), {"f": fleet}).scalar():
                console.print(f"[red]error:[/] there is no fleet {fleet!r} in this database")
                raise typer.Exit(1)
            ensure_fleet_role(conn, fleet)
        with fleet_connection(engine, fleet) as conn:
            if kind == "events":
                return event_rates(conn, filters, group=group, period=period)  # type: ignore[arg-type]
            if kind == "trend":
                return trend(conn, filters, group=group)  # type: ignore[arg-type]
            if kind == "coaching":
                return effectiveness(conn)
            if kind == "scores":
                if (
                    filters.since is None or filters.until is None
                ):  # the 4 weeks up to the fleet's last driving
                    end = (latest_day(conn, fleet) or date.today()) + timedelta(days=1)
                    filters = replace(filters, since=end - timedelta(days=28), until=end)
                return score_rows(safety_scores(conn, filters, score_settings(conn, fleet)))
            return review_queue(conn, filters)
    finally:
        engine.dispose()
        database.close()


def print_rows(rows: list[dict[str, Any]], *, title: str, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(rows, default=str, indent=1) + "\n")
    elif output == "csv":
        from streams.console.evidence import csv_cell  # the console's CSV: formula-like text defused

        columns = list(rows[0]) if rows else []
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([csv_cell(row.get(c)) for c in columns] for row in rows)
    else:
        table = Table(title=title)
        for column in rows[0] if rows else ["(no rows)"]:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)
