"""`drivecoach report`: the safety reports from the report views, under the fleet's role."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from streams.cli.options import build_settings, console

app = typer.Typer()


@app.command()
def report(
    kind: Annotated[
        str,
        typer.Argument(
            help="events (per group and period, with rates per driving hour and per 100 km) | trend | queue"
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
    """Safety reports from Postgres (the views of migrations 0002 and 0003), as rich tables, CSV or JSON."""
    import csv
    import json
    from datetime import UTC, date, datetime

    from rich.table import Table
    from sqlalchemy import create_engine, text

    from streams.console.reports import Filters, default_window, event_rates, review_queue, trend
    from streams.infra.database import resolve_database_url
    from streams.infra.tenancy import ensure_fleet_role, fleet_connection

    checks = {
        "kind": (kind, ("events", "trend", "queue")),
        "group": (group, ("fleet", "vehicle", "driver")),
        "period": (period, ("day", "week")),
        "format": (output, ("table", "csv", "json")),
    }
    for name, (value, allowed) in checks.items():
        if value not in allowed:
            console.print(
                f"[red]configuration error:[/] {name} must be one of {', '.join(allowed)}, not {value!r}"
            )
            raise typer.Exit(2)
    try:
        first, last = (date.fromisoformat(d) if d else None for d in (since, until))
    except ValueError as err:
        console.print(f"[red]configuration error:[/] {err}")
        raise typer.Exit(2) from err
    if kind == "trend" and (first is None or last is None):
        first, last = default_window(datetime.now(UTC).date())
    filters = Filters(
        fleet=fleet, vehicle=vehicle, driver=driver, event_type=event_type, since=first, until=last
    )
    if fleet is None:
        console.print(
            "[red]configuration error:[/] --fleet is required: reports run under the fleet's Postgres role, "
            "which sees only that fleet's rows"
        )
        raise typer.Exit(2)
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
                rows = event_rates(conn, filters, group=group, period=period)  # type: ignore[arg-type]
            elif kind == "trend":
                rows = trend(conn, filters, group=group)  # type: ignore[arg-type]
            else:
                rows = review_queue(conn, filters)
    finally:
        engine.dispose()
        database.close()
    if output == "json":
        sys.stdout.write(json.dumps(rows, default=str, indent=1) + "\n")
    elif output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(title=f"{kind} ({len(rows)} rows)")
        for column in rows[0] if rows else ["(no rows)"]:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)
