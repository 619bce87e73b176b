"""What every `python -m training.X` command shares: the error console, the common flags, logging, and
building the one TrainingSettings object (the same way `drivecoach` builds its Settings)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from training.settings import TrainingSettings

console = Console(stderr=True)


def command_app(help_text: str) -> typer.Typer:
    """A one-command Typer app: `python -m training.X --flags` (no sub-command name)."""
    return typer.Typer(add_completion=False, help=help_text, pretty_exceptions_enable=False)


def fail(message: str) -> NoReturn:
    """Stop the command with one sentence and exit code 2 (a configuration or usage error)."""
    console.print(f"[red]configuration error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def build_settings(*, need_database: bool = False, **overrides: Any) -> TrainingSettings:
    """Environment first, flags over it; a bad value stops here with one sentence."""
    try:
        settings = TrainingSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        fail(f"{'.'.join(map(str, first['loc'])) or 'settings'}: {first['msg']}")
    if need_database and not settings.database_url:
        fail("database_url: set --database-url or DRIVECOACH_DATABASE_URL")
    return settings


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- flags more than one command takes ----------------------------------------------------------------------
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="SQLAlchemy URL of the drivecoach database; default DRIVECOACH_DATABASE_URL"
    ),
]
Seed = Annotated[int, typer.Option(help="random seed")]
EvalFraction = Annotated[float, typer.Option(help="share of the vehicles (not clips) held out for eval")]

# The fine-tuning recipe (training.finetune.Recipe): `training.finetune` takes it, `training.retrain` passes it on.
Lr = Annotated[float, typer.Option(help="peak learning rate")]
Epochs = Annotated[float, typer.Option(help="passes over the train split (--max-steps > 0 overrides)")]
WarmupRatio = Annotated[float, typer.Option(help="share of the steps spent warming up the learning rate")]
Scheduler = Annotated[str, typer.Option(help="learning-rate schedule (a transformers scheduler type)")]
CutoffLen = Annotated[int, typer.Option(help="longer examples (tokens) are left out")]
GradAccum = Annotated[int, typer.Option(min=1, help="gradient accumulation steps (batch size is 1 clip)")]
SaveSteps = Annotated[int, typer.Option(min=1, help="steps between checkpoints (a stopped run resumes)")]
MaxSteps = Annotated[int, typer.Option(help="> 0: train exactly this many steps, overriding --epochs")]
PromptVersion = Annotated[
    str,
    typer.Option(
        help="the prompt the model learns to answer (schemas.prompts: cot-v1 video only, cot-v2 + motion)"
    ),
]

OutDir = Annotated[Path, typer.Option(help="output directory")]
