"""`drivecoach model`: the model registry, which version the workers serve."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.options import build_settings, console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The model registry in Postgres: which version the workers serve.",
)


def _registry_session():
    from sqlalchemy.orm import sessionmaker

    from streams.infra.database import make_engine, resolve_database_url

    database = resolve_database_url(build_settings())
    return sessionmaker(make_engine(database.url)), database


@app.command("list")
def model_list() -> None:
    """Every registered version, newest first, with its stage and, for a retrained one, how it was judged."""
    from rich.table import Table

    from schemas.registry import evaluation_summary, versions

    factory, database = _registry_session()
    table = Table(title="model versions")
    for col in ("version", "stage", "promoted", "demo", "held-out evaluation", "path"):
        table.add_column(col)
    for v in versions(factory):
        table.add_row(
            v.version,
            v.stage,
            f"{v.promoted_at:%Y-%m-%d %H:%M}" if v.promoted_at else "",
            str(v.demo),
            evaluation_summary(v.metrics),
            v.path,
        )
    console.print(table)
    database.close()


@app.command("promote")
def model_promote(version: Annotated[str, typer.Argument(help="a registered version")]) -> None:
    """Make VERSION production; workers switch to it between batches."""
    from schemas.registry import promote

    factory, database = _registry_session()
    try:
        promote(factory, version)
    except KeyError as err:
        console.print(f"[red]error:[/] {err.args[0]}")
        raise typer.Exit(1) from err
    finally:
        database.close()
    console.print(f"{version} is production")


@app.command("rollback")
def model_rollback() -> None:
    """Put the previous production version back."""
    from schemas.registry import rollback

    factory, database = _registry_session()
    try:
        version = rollback(factory)
    except LookupError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from err
    finally:
        database.close()
    console.print(f"rolled back: {version} is production")
