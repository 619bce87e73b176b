"""What every `drivecoach` command shares: the console, the common flags, and building the one Settings object."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

console = Console()

Bootstrap = Annotated[str, typer.Option(help="Kafka bootstrap servers; default DRIVECOACH_KAFKA_BOOTSTRAP")]
Model = Annotated[
    str | None, typer.Option("--model", help="Qwen2.5-VL checkpoint path or hub id (default: demo model)")
]


def build_settings(**overrides: Any) -> Settings:
    """Environment first, flags over it; a bad combination stops here with one sentence."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        console.print(
            f"[red]configuration error:[/] {'.'.join(map(str, first['loc'])) or 'settings'}: {first['msg']}"
        )
        raise typer.Exit(2) from err


def configure_logging(level: str = "INFO") -> None:
    """Log lines to stderr; `kill -USR1 <pid>` writes every thread's stack there too (a stalled stage says where
    it waits, without a debugger on a production host)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The process's own stderr (fd 2), even where a test runner swapped sys.stderr.
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


@contextmanager
def database_engine(
    settings: Settings | None = None, *, migrate: bool = False, errors: tuple[type[Exception], ...] = ()
) -> Iterator[Engine]:
    """The configured database (embedded when none is set) for one command, closed after it; `migrate`: brought
    to the head schema first (the owner's commands). An error of `errors` is printed in one line and exits 1."""
    from streams.infra.database import make_engine, resolve_database_url
    from streams.infra.database import migrate as migrate_to_head

    database = resolve_database_url(settings or build_settings())
    try:
        if migrate:
            migrate_to_head(database.url)
        engine = make_engine(database.url)
        try:
            yield engine
        except errors as err:
            console.print(f"[red]error:[/] {err}")
            raise typer.Exit(1) from err
        finally:
            engine.dispose()
    finally:
        database.close()
