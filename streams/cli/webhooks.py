"""`drivecoach webhooks`: register fleets' endpoints (as the database's owner), run the delivery process, revive
dead deliveries (README.md, "Webhooks")."""

from __future__ import annotations

import signal
import uuid
from typing import Annotated

import typer
from rich.table import Table

from streams.cli.options import build_settings, configure_logging, console, database_engine

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Signed webhooks: fleets' endpoints, and the process that delivers severe events, reviews and coaching "
    "acknowledgements to them.",
)


@app.command("add")
def webhooks_add(
    fleet: Annotated[str, typer.Option(help="the fleet whose changes the endpoint gets (it must exist)")],
    url: Annotated[str, typer.Option(help="where deliveries are POSTed (https in production)")],
    kinds: Annotated[
        str, typer.Option(help="comma-separated: severe_event, review_done, coaching_acknowledged")
    ] = "severe_event,review_done,coaching_acknowledged",
    min_severity: Annotated[
        int, typer.Option(min=1, max=3, help="severe_event only for event types of at least this severity")
    ] = 3,
) -> None:
    """Register an endpoint and print its signing secret, this once."""
    from streams.webhooks.endpoints import add_endpoint, parse_kinds
    from streams.webhooks.exceptions import EndpointError

    with database_engine(migrate=True, errors=(EndpointError,)) as engine, engine.begin() as conn:
        endpoint_id, secret = add_endpoint(
            conn, fleet_id=fleet, url=url, kinds=parse_kinds(kinds), min_severity=min_severity
        )
    console.print(f"endpoint {endpoint_id} gets fleet {fleet}'s {kinds}")
    console.print("its signing secret (shown only now; keep it where the receiver reads it):")
    typer.echo(secret)


@app.command("list")
def webhooks_list(
    fleet: Annotated[str | None, typer.Option(help="only this fleet's endpoints")] = None,
) -> None:
    """Endpoints with their deliveries counted by status (never their secrets)."""
    from streams.webhooks.endpoints import endpoints

    with database_engine() as engine, engine.connect() as conn:
        rows = endpoints(conn, fleet_id=fleet)
    table = Table("endpoint", "fleet", "url", "kinds", "min severity", "pending", "delivered", "dead")
    for r in rows:
        table.add_row(
            str(r.id),
            r.fleet_id,
            r.url,
            ",".join(r.kinds),
            str(r.min_severity),
            str(r.pending),
            str(r.delivered),
            str(r.dead),
        )
    console.print(table)


@app.command("remove")
def webhooks_remove(
    endpoint: Annotated[uuid.UUID, typer.Argument(help="the endpoint's id (`webhooks list`)")],
) -> None:
    """Delete an endpoint and its deliveries, pending ones included."""
    from streams.webhooks.endpoints import remove_endpoint

    with database_engine() as engine, engine.begin() as conn:
        removed = remove_endpoint(conn, endpoint)
    if not removed:
        console.print(f"[red]error:[/] no endpoint {endpoint}")
        raise typer.Exit(1)
    console.print(f"endpoint {endpoint} removed")


@app.command("redeliver")
def webhooks_redeliver(
    endpoint: Annotated[uuid.UUID | None, typer.Option(help="only this endpoint's dead deliveries")] = None,
    fleet: Annotated[str | None, typer.Option(help="only this fleet's")] = None,
    event: Annotated[uuid.UUID | None, typer.Option(help="only the delivery of this event id")] = None,
) -> None:
    """Make dead deliveries pending again (every attempt anew, same event ids); the delivery process sends them."""
    from streams.webhooks.endpoints import redeliver

    with database_engine() as engine, engine.begin() as conn:
        revived = redeliver(conn, endpoint_id=endpoint, fleet_id=fleet, event_id=event)
    console.print(f"{revived} dead deliveries pending again")


@app.command("deliver")
def webhooks_deliver(
    once: Annotated[bool, typer.Option("--once", help="send what is due now, then exit")] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="requests in flight at once; default DRIVECOACH_WEBHOOK_CONCURRENCY"),
    ] = None,
) -> None:
    """The delivery process: sends due deliveries, retries failures with backoff, gives up after the last attempt.
    SIGTERM or SIGINT: each request in flight finishes and is recorded, then it exits. Run it as its own login
    (`drivecoach migrate --webhooks-login NAME`); any number of replicas may run."""
    from streams.infra import metrics
    from streams.infra.database import SchemaBehind, make_engine, migrate_unless_current, resolve_database_url
    from streams.webhooks.delivery import Deliverer

    configure_logging()
    settings = build_settings(webhook_concurrency=concurrency)
    database = resolve_database_url(settings)
    try:
        migrate_unless_current(database.url)
    except SchemaBehind as err:
        console.print(f"[red]error:[/] {err}")
        database.close()
        raise typer.Exit(2) from err
    metrics.serve(settings.metrics_port)
    engine = make_engine(database.url, pool_size=settings.webhook_concurrency)
    deliverer = Deliverer(engine, settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: deliverer.stop.set())
    try:
        deliverer.run(once=once)
    finally:
        engine.dispose()
        database.close()
