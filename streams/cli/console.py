"""`drivecoach console`: serve the safety managers' console, add managers."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from streams.cli.options import build_settings, configure_logging, console, database_engine

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The safety managers' web console: serve it, and manage who may sign in.",
)


@app.command("serve")
def console_serve(
    host: Annotated[
        str | None, typer.Option(help="address to listen on; default DRIVECOACH_CONSOLE_HOST")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port; default DRIVECOACH_CONSOLE_PORT (8080)")] = None,
) -> None:
    """Serve the console on the database's current data (migrating it first when it is behind and this login may;
    the console's own login, `drivecoach migrate --console-login`, may not)."""
    from streams.console.server import PortInUse, serve
    from streams.infra.database import SchemaBehind, make_engine, migrate_unless_current, resolve_database_url

    configure_logging("WARNING")
    settings = build_settings(console_host=host, console_port=port)
    database = resolve_database_url(settings)
    try:
        migrate_unless_current(database.url)
    except SchemaBehind as err:
        console.print(f"[red]error:[/] {err}")
        database.close()
        raise typer.Exit(2) from err
    engine = make_engine(database.url, pool_size=8)
    try:
        serve(settings, engine, ready=lambda url: console.print(f"console: [bold]{url}[/] (Ctrl-C stops it)"))
    except PortInUse as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from err
    finally:
        engine.dispose()
        database.close()


@app.command("add-manager")
def console_add_manager(
    username: Annotated[str, typer.Argument(help="sign-in name")],
    fleet: Annotated[str, typer.Option(help="the one fleet this manager sees (it must exist)")],
    name: Annotated[str, typer.Option(help="display name")] = "",
    create_fleet: Annotated[
        bool,
        typer.Option(
            "--create-fleet",
            help="create the fleet if it does not exist (without it, a mistyped fleet is an error)",
        ),
    ] = False,
    password_env: Annotated[
        str | None,
        typer.Option(help="read the password from this environment variable (default: ask for it)"),
    ] = None,
    admin: Annotated[
        bool | None,
        typer.Option(
            "--admin/--not-admin",
            help="an admin of the fleet reads its audit log in the console (default: a new manager is not; an "
            "existing one stays as they were)",
        ),
    ] = None,
    view_unblurred: Annotated[
        bool | None,
        typer.Option(
            "--view-unblurred/--no-view-unblurred",
            help="may see faces in the driver view unblurred, each time written to the audit log (default: a "
            "new manager may not; an existing one stays as they were)",
        ),
    ] = None,
) -> None:
    """Create a safety manager (or set a new password, which ends their sessions). The fleet must exist already
    (it does once its clips arrive); --create-fleet creates a new one."""
    from sqlalchemy.orm import Session

    from streams.console.auth import ManagerError, add_manager
    from streams.infra.tenancy import FleetAccessError

    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            console.print(
                f"[red]configuration error:[/] environment variable {password_env} is empty or unset"
            )
            raise typer.Exit(2)
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with (
        database_engine(migrate=True, errors=(ManagerError, FleetAccessError)) as engine,
        Session(engine) as session,
        session.begin(),
    ):
        add_manager(
            session,
            username=username,
            fleet_id=fleet,
            password=password,
            display_name=name,
            create_fleet=create_fleet,
            is_admin=admin,
            view_unblurred=view_unblurred,
        )
    console.print(f"manager [bold]{username}[/] signs in to fleet [bold]{fleet}[/]")


@app.command("score-settings")
def console_score_settings(
    fleet: Annotated[str, typer.Argument(help="the fleet whose driver safety score this sets")],
    weight: Annotated[
        list[str] | None,
        typer.Option(help="TYPE=WEIGHT, e.g. phone_use=4 (repeat it); other types keep theirs"),
    ] = None,
    per_100km: Annotated[
        float | None, typer.Option("--per-100km", min=0, help="penalty per weighted event per 100 km")
    ] = None,
    per_hour: Annotated[
        float | None, typer.Option("--per-hour", min=0, help="penalty per weighted event per driving hour")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="back to the defaults")] = False,
) -> None:
    """Set (or show) a fleet's weights and penalties for the driver safety score (README "Driver safety score"),
    as the database's owner; with no option it shows them."""
    from sqlalchemy import delete, select
    from sqlalchemy.dialects.postgresql import insert
    from sqlalchemy.orm import Session

    from schemas.db import Fleet, FleetScoreSettings
    from streams.console.reports import score_settings
    from streams.console.safety_score import parse_weights

    try:
        weights = parse_weights(weight or [])
    except ValueError as err:
        console.print(f"[red]configuration error:[/] {err}")
        raise typer.Exit(2) from err
    with database_engine(migrate=True) as engine:
        with Session(engine) as session, session.begin():
            if session.scalar(select(Fleet.fleet_id).where(Fleet.fleet_id == fleet)) is None:
                console.print(f"[red]error:[/] there is no fleet {fleet!r} in this database")
                raise typer.Exit(1)
            row = session.get(FleetScoreSettings, fleet)
            if reset:
                session.execute(delete(FleetScoreSettings).where(FleetScoreSettings.fleet_id == fleet))
            elif weights or per_100km is not None or per_hour is not None:
                values = {
                    "weights": {**(row.weights if row else {}), **weights},
                    "penalty_per_100km": per_100km
                    if per_100km is not None
                    else (row and row.penalty_per_100km),
                    "penalty_per_hour": per_hour if per_hour is not None else (row and row.penalty_per_hour),
                }
                upsert = insert(FleetScoreSettings).values(fleet_id=fleet, **values)
                session.execute(upsert.on_conflict_do_update(index_elements=["fleet_id"], set_=values))
        with engine.connect() as conn:
            effective = score_settings(conn, fleet)
    table = Table(title=f"safety score of fleet {fleet}")
    table.add_column("setting")
    table.add_column("value", justify="right")
    for name, value in sorted(effective.weights.items()):
        table.add_row(f"weight {name}", f"{value:g}")
    table.add_row("penalty per 100 km", f"{effective.penalty_per_100km:g}")
    table.add_row("penalty per driving hour", f"{effective.penalty_per_hour:g}")
    console.print(table)
