"""The `drivecoach` command line: each command builds the one Settings object and passes it down."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

Bootstrap = Annotated[str, typer.Option(help="Kafka bootstrap servers; default DRIVECOACH_KAFKA_BOOTSTRAP")]
Model = Annotated[str | None, typer.Option("--model", help="Qwen2.5-VL checkpoint path or hub id (default: demo model)")]


def build_settings(**overrides: Any) -> Settings:
    """Environment first, flags over it; a bad combination stops here with one sentence."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        console.print(f"[red]configuration error:[/] {'.'.join(map(str, first['loc'])) or 'settings'}: {first['msg']}")
        raise typer.Exit(2) from err


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def demo(
    vehicles: Annotated[int, typer.Option(min=1, help="simulated vehicles")] = 4,
    trips: Annotated[int, typer.Option(min=1, help="trips per vehicle")] = 3,
    seed: Annotated[int, typer.Option(help="simulation seed (the demo model trains on another)")] = 7,
    model: Model = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every clip")] = 420.0,
    home: Annotated[Path | None, typer.Option(help="working dir (default .drivecoach)")] = None,
) -> None:
    """Run every stage on embedded defaults with simulated vehicles, print the report, stop everything."""
    from streams.demo import run_demo

    _logging("WARNING")
    settings = build_settings(model=model, home=home)
    run_demo(settings, vehicles=vehicles, trips=trips, seed=seed, timeout_s=timeout, console=console)


@app.command()
def joiner(bootstrap: Bootstrap = "") -> None:
    """Run a Faust joiner + clip-builder worker (blocks; SIGTERM stops it cleanly)."""
    from streams.app import run_worker

    settings = build_settings(kafka_bootstrap=bootstrap or None)
    if not settings.kafka_bootstrap:
        console.print("[red]configuration error:[/] the joiner needs --bootstrap or DRIVECOACH_KAFKA_BOOTSTRAP.")
        raise typer.Exit(2)
    run_worker(settings, settings.kafka_bootstrap)


@app.command()
def worker(bootstrap: Bootstrap = "", model: Model = None) -> None:
    """Run the inference worker: consume `clips`, run the CoT, write Postgres, then commit offsets."""
    from sqlalchemy.orm import sessionmaker

    from streams.database import make_engine, resolve_database_url
    from streams.engine import TransformersEngine, is_demo_model
    from streams.sink import register_model_version
    from streams.worker import InferenceWorker

    _logging()
    settings = build_settings(kafka_bootstrap=bootstrap or None, model=model)
    if not settings.kafka_bootstrap or not settings.model:
        console.print("[red]configuration error:[/] the worker needs --bootstrap and --model (or their env variables).")
        raise typer.Exit(2)
    database = resolve_database_url(settings)
    engine = TransformersEngine(settings.model, max_new_tokens=settings.max_new_tokens)
    factory = sessionmaker(make_engine(database.url))
    register_model_version(factory, version=engine.model_version, path=str(Path(settings.model).resolve()) if Path(settings.model).exists() else settings.model,
                           demo=is_demo_model(settings.model))
    loop = InferenceWorker(settings, settings.kafka_bootstrap, engine, factory)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    loop.run()
    database.close()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic) on the configured Postgres."""
    from streams.database import migrate as run_migrations
    from streams.database import resolve_database_url

    _logging()
    database = resolve_database_url(build_settings())
    run_migrations(database.url)
    console.print(f"schema at head on {database.url.render_as_string(hide_password=True)}")
    database.close()


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="directory for the segment videos and truth.json")] = Path("sim"),
    seed: int = 7,
    count: Annotated[int, typer.Option(min=1)] = 8,
    vehicles: Annotated[int, typer.Option(min=1)] = 4,
) -> None:
    """Render simulated dashcam trips (road + driver segments) with their ground truth."""
    import json

    from streams.simulate import make_scenarios, write_segments

    truth = []
    for s in make_scenarios(seed, count, vehicles=vehicles):
        segs = write_segments(s, out / s.scenario_id)
        truth.append({"scenario_id": s.scenario_id, "vehicle_id": s.vehicle_id, "start_ts": s.start_ts,
                      "duration": s.duration, "events": [e.model_dump(mode="json") for e in s.events],
                      "instruction": s.instruction, "segments": [str(g.path) for g in segs]})
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    console.print(f"{count} scenarios in {out}")


@app.command()
def broker(port: int = 9092) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory-only) in the foreground."""
    from streams.broker import EmbeddedBroker

    with EmbeddedBroker(port=port) as b:
        console.print(f"broker on {b.bootstrap}; Ctrl-C stops it (every topic is lost)")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
