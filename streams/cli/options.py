"""What every `drivecoach` command shares: the console, the common flags, and building the one Settings object."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings

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
