"""`drivecoach retention`: per-fleet retention periods, legal holds, and the run that deletes what expired
(README "Retention")."""

from __future__ import annotations

import getpass
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from streams.cli.options import build_settings, configure_logging, console, database_engine

app = typer.Typer(no_args_is_help=True, help="retention periods, legal holds, and deleting what expired")

Fleet = Annotated[str, typer.Option("--fleet", help="the fleet's id")]
KINDS = ("frames", "video", "footage", "results", "clip")


@app.command()
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be deleted; delete nothing")
    ] = False,
    fleet: Annotated[list[str] | None, typer.Option("--fleet", help="only this fleet (repeat it)")] = None,
    pause_ms: Annotated[
        int | None,
        typer.Option(min=0, help="wait after each deletion; default DRIVECOACH_RETENTION_PAUSE_MS"),
    ] = None,
) -> None:
    """Delete expired blobs and rows of every fleet with a retention period, keeping clips under a legal hold or in
    open coaching, and log each deletion (table retention_deletions). Safe to interrupt: the next run finishes what
    this one began. Connects as DRIVECOACH_DATABASE_URL (in a deployment, the retention login)."""
    from streams.infra.blobs import open_blob_store
    from streams.retention.exceptions import RunInProgress
    from streams.retention.job import RetentionJob

    configure_logging("WARNING")
    settings = build_settings(retention_pause_ms=pause_ms)
    with database_engine(settings, errors=(RunInProgress,)) as engine:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
        ) as bar:
            task = bar.add_task("retention: deciding")

            def report(kind: str, subject: str) -> None:
                bar.update(task, description=f"retention: {kind} {subject}")

            job = RetentionJob(
                engine=engine,
                blobs=open_blob_store(settings),
                now=time.time(),
                dry_run=dry_run,
                pause_s=settings.retention_pause_ms / 1000,
                fleets=fleet or None,
                report=report,
            )
            summary = job.run()
    table = Table(title=f"retention run {summary.run_id}")
    table.add_column("deleted")
    table.add_column("would be" if dry_run else "count", justify="right")
    for kind in KINDS:
        table.add_row(kind, str(summary.deleted[kind]))
    console.print(table)
    if dry_run:
        console.print("dry run: nothing was deleted")
    console.print(
        f"fleets with a retention period: {len(summary.fleets)}; expired clips kept (legal hold or open coaching): "
        f"{summary.kept}; deletions of an interrupted run finished: {summary.resumed}"
    )


@app.command()
def settings(
    fleet: Fleet,
    video_days: Annotated[
        int | None, typer.Option(min=0, help="days from a clip's end to keep its uploads, frames and footage")
    ] = None,
    results_days: Annotated[
        int | None, typer.Option(min=0, help="days from a clip's end to keep its answers, events and reviews")
    ] = None,
    keep_video: Annotated[
        bool, typer.Option("--keep-video", help="keep the video forever (the default)")
    ] = False,
    keep_results: Annotated[
        bool, typer.Option("--keep-results", help="keep the results forever (the default)")
    ] = False,
) -> None:
    """Set (or, with no option, show) a fleet's retention periods, as the database's owner."""
    from sqlalchemy.orm import Session

    from streams.retention.admin import periods, set_periods
    from streams.retention.exceptions import RetentionError
    from streams.retention.policy import Periods

    if (keep_video and video_days is not None) or (keep_results and results_days is not None):
        console.print("[red]configuration error:[/] give a period or --keep-..., not both")
        raise typer.Exit(2)
    with (
        database_engine(migrate=True, errors=(RetentionError,)) as engine,
        Session(engine) as session,
        session.begin(),
    ):
        now = periods(session, fleet)
        wanted = Periods(
            None if keep_video else video_days if video_days is not None else now.video_days,
            None if keep_results else results_days if results_days is not None else now.results_days,
        )
        if wanted != now:
            set_periods(session, fleet, wanted)
    forever = "forever"
    console.print(
        f"fleet {fleet}: video kept {forever if wanted.video_days is None else f'{wanted.video_days} days'}, "
        f"results kept {forever if wanted.results_days is None else f'{wanted.results_days} days'}"
    )


@app.command()
def hold(
    clip: Annotated[str, typer.Argument(help="the clip's id")],
    fleet: Fleet,
    reason: Annotated[str, typer.Option(help="why: a case, claim or request number")],
    by: Annotated[str | None, typer.Option(help="who places it (default: this user)")] = None,
) -> None:
    """Place a legal hold on a clip: retention keeps its video, results and row until the hold is released."""
    from sqlalchemy.orm import Session

    from streams.retention.admin import place_hold
    from streams.retention.exceptions import RetentionError

    with (
        database_engine(migrate=True, errors=(RetentionError,)) as engine,
        Session(engine) as session,
        session.begin(),
    ):
        result = place_hold(
            session, fleet_id=fleet, clip_id=clip, reason=reason, held_by=by or getpass.getuser()
        )
    console.print(f"clip {clip} of fleet {fleet} is held (hold {result.hold_id})")
    if result.already_deleted:
        console.print(
            f"[yellow]warning:[/] retention had already deleted its {', '.join(result.already_deleted)}"
        )


@app.command()
def release(
    clip: Annotated[str, typer.Argument(help="the clip's id")],
    fleet: Fleet,
    by: Annotated[str | None, typer.Option(help="who releases it (default: this user)")] = None,
) -> None:
    """Release a clip's legal holds: retention treats it as any other clip again."""
    from sqlalchemy.orm import Session

    from streams.retention.admin import release_hold

    with database_engine(migrate=True) as engine, Session(engine) as session, session.begin():
        released = release_hold(
            session, fleet_id=fleet, clip_id=clip, released_by=by or getpass.getuser(), at=datetime.now(UTC)
        )
    if not released:
        console.print(f"[red]error:[/] clip {clip} of fleet {fleet} has no active hold")
        raise typer.Exit(1)
    console.print(f"released {released} hold(s) on clip {clip} of fleet {fleet}")
