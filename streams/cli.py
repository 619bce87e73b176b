"""The `drivecoach` command line: each command builds the one Settings object and passes it down."""

from __future__ import annotations

import logging
import os
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
    review: Annotated[bool, typer.Option(help="a simulated safety manager reviews every answer (training labels)")]
    = False,
    serve_console: Annotated[bool, typer.Option("--console/--no-console", help="then serve the safety managers' "
                                                "console, with a demo sign-in, until Ctrl-C")] = True,
    console_port: Annotated[int | None, typer.Option(help="the console's port; default DRIVECOACH_CONSOLE_PORT "
                                                     "(8080)")] = None,
) -> None:
    """Run every stage on embedded defaults with simulated vehicles, print the report, then serve the console."""
    from streams.demo import run_demo

    _logging("WARNING")
    settings = build_settings(model=model, home=home, console_port=console_port)
    run_demo(settings, vehicles=vehicles, trips=trips, seed=seed, timeout_s=timeout, console=console, review=review,
             serve_console=serve_console)


@app.command()
def joiner(
    bootstrap: Bootstrap = "",
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port (0 = off); default "
                                                      "DRIVECOACH_METRICS_PORT")] = None,
) -> None:
    """Run a Faust joiner + clip-builder worker (blocks; SIGTERM stops it cleanly)."""
    from streams.app import run_worker

    settings = build_settings(kafka_bootstrap=bootstrap or None, metrics_port=metrics_port)
    if not settings.kafka_bootstrap:
        console.print("[red]configuration error:[/] the joiner needs --bootstrap or DRIVECOACH_KAFKA_BOOTSTRAP.")
        raise typer.Exit(2)
    run_worker(settings, settings.kafka_bootstrap)


@app.command()
def worker(
    bootstrap: Bootstrap = "",
    model: Model = None,
    engine: Annotated[str | None, typer.Option(help="transformers | vllm | openai; default DRIVECOACH_ENGINE")] = None,
) -> None:
    """Run the inference worker: consume `clips` in batches, run the CoT, write Postgres, then commit offsets."""
    from sqlalchemy.orm import sessionmaker

    from schemas.registry import serve_or_adopt
    from streams import metrics
    from streams.database import make_engine, resolve_database_url
    from streams.engine import is_demo_model, load_engine, model_version_of
    from streams.worker import InferenceWorker

    _logging()
    settings = build_settings(kafka_bootstrap=bootstrap or None, model=model, engine=engine)
    if not settings.kafka_bootstrap or not settings.model:
        console.print("[red]configuration error:[/] the worker needs --bootstrap and --model (or their env variables).")
        raise typer.Exit(2)
    database = resolve_database_url(settings)
    factory = sessionmaker(make_engine(database.url))
    local = Path(settings.model)
    configured = model_version_of(settings.model)
    serving = serve_or_adopt(factory, version=configured, path=str(local.resolve()) if local.exists() else settings.model,
                             demo=is_demo_model(settings.model))
    if serving.version != configured:
        console.print(f"serving the production model {serving.version} ({serving.path}), not {settings.model}")
    loop = InferenceWorker(settings, settings.kafka_bootstrap, lambda path: load_engine(settings, path), factory,
                           model_path=serving.path)
    metrics.serve(settings.metrics_port)
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


@app.command("serve-model")
def serve_model(
    model: Annotated[str, typer.Option(help="checkpoint directory (or hub id) to serve")],
    port: Annotated[int, typer.Option(help="port of the OpenAI-compatible API")] = 8000,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run a vLLM OpenAI-compatible server for a checkpoint, configured as the worker's `openai` engine expects
    (point DRIVECOACH_OPENAI_BASE_URL at http://HOST:PORT/v1). Replaces this process."""
    from streams.vllm_server import serve_args, server_env

    settings = build_settings()
    args = serve_args(model, port=port, host=host, max_model_len=settings.vllm_max_model_len,
                      max_pixels=settings.max_pixels)
    os.execvpe(args[0], args, server_env())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def retrain(ctx: typer.Context) -> None:
    """The scheduled retraining job: export -> fine-tune -> evaluate -> promote (`python -m training.retrain`;
    its options pass through: --min-new-reviews, --metric, --margin, --nproc, --launcher, --hostfile, --lr, ...)."""
    from streams.database import resolve_database_url

    database = resolve_database_url(build_settings())
    url = database.url.render_as_string(hide_password=False)
    args = [sys.executable, "-m", "training.retrain", "--database-url", url, *ctx.args]
    os.execvpe(args[0], args, dict(os.environ))


@app.command()
def report(
    kind: Annotated[str, typer.Argument(help="events (per group and period, with rates per driving hour and per 100 km) | trend | queue")]
    = "events",
    fleet: Annotated[str | None, typer.Option(help="fleet id")] = None,
    vehicle: Annotated[str | None, typer.Option(help="vehicle id")] = None,
    driver: Annotated[str | None, typer.Option(help="driver id")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="event type, e.g. phone_use")] = None,
    since: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="day after the last, YYYY-MM-DD (trend default: the last 7 days)")]
    = None,
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

    from streams.database import resolve_database_url
    from streams.reports import Filters, default_window, event_rates, review_queue, trend
    from streams.tenancy import ensure_fleet_role, fleet_connection

    checks = {"kind": (kind, ("events", "trend", "queue")), "group": (group, ("fleet", "vehicle", "driver")),
              "period": (period, ("day", "week")), "format": (output, ("table", "csv", "json"))}
    for name, (value, allowed) in checks.items():
        if value not in allowed:
            console.print(f"[red]configuration error:[/] {name} must be one of {', '.join(allowed)}, not {value!r}")
            raise typer.Exit(2)
    try:
        first, last = (date.fromisoformat(d) if d else None for d in (since, until))
    except ValueError as err:
        console.print(f"[red]configuration error:[/] {err}")
        raise typer.Exit(2) from err
    if kind == "trend" and (first is None or last is None):
        first, last = default_window(datetime.now(UTC).date())
    filters = Filters(fleet=fleet, vehicle=vehicle, driver=driver, event_type=event_type, since=first, until=last)
    if fleet is None:
        console.print("[red]configuration error:[/] --fleet is required: reports run under the fleet's Postgres role, "
                      "which sees only that fleet's rows")
        raise typer.Exit(2)
    database = resolve_database_url(build_settings())
    engine = create_engine(database.url)
    try:
        with engine.begin() as conn:
            if not conn.execute(text("SELECT to_regclass('fleet_roles')")).scalar():
                console.print("[red]error:[/] this database has no report views yet: run `drivecoach migrate`")
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


console_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="The safety managers' web console: serve it, and manage who may sign in.")
app.add_typer(console_app, name="console")


@console_app.command("serve")
def console_serve(
    host: Annotated[str | None, typer.Option(help="address to listen on; default DRIVECOACH_CONSOLE_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="port; default DRIVECOACH_CONSOLE_PORT (8080)")] = None,
) -> None:
    """Serve the console on the database's current data (migrating it first)."""
    from streams.console.server import PortInUse, serve
    from streams.database import make_engine, migrate, resolve_database_url

    _logging("WARNING")
    settings = build_settings(console_host=host, console_port=port)
    database = resolve_database_url(settings)
    migrate(database.url)
    engine = make_engine(database.url, pool_size=8)
    try:
        serve(settings, engine, ready=lambda url: console.print(f"console: [bold]{url}[/] (Ctrl-C stops it)"))
    except PortInUse as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from err
    finally:
        engine.dispose()
        database.close()


@console_app.command("add-manager")
def console_add_manager(
    username: Annotated[str, typer.Argument(help="sign-in name")],
    fleet: Annotated[str, typer.Option(help="the one fleet this manager sees")],
    name: Annotated[str, typer.Option(help="display name")] = "",
    password_env: Annotated[str | None, typer.Option(help="read the password from this environment variable "
                                                      "(default: ask for it)")] = None,
) -> None:
    """Create a safety manager (or set a new password, which ends their sessions)."""
    from sqlalchemy.orm import Session

    from streams.console.auth import ManagerError, add_manager
    from streams.database import make_engine, migrate, resolve_database_url
    from streams.tenancy import FleetAccessError

    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            console.print(f"[red]configuration error:[/] environment variable {password_env} is empty or unset")
            raise typer.Exit(2)
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = build_settings()
    database = resolve_database_url(settings)
    migrate(database.url)
    engine = make_engine(database.url)
    try:
        with Session(engine) as session, session.begin():
            add_manager(session, username=username, fleet_id=fleet, password=password, display_name=name)
    except (ManagerError, FleetAccessError) as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from err
    finally:
        engine.dispose()
        database.close()
    console.print(f"manager [bold]{username}[/] signs in to fleet [bold]{fleet}[/]")


model_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The model registry in Postgres: which version the workers serve.")
app.add_typer(model_app, name="model")


def _registry_session():
    from sqlalchemy.orm import sessionmaker

    from streams.database import make_engine, resolve_database_url

    database = resolve_database_url(build_settings())
    return sessionmaker(make_engine(database.url)), database


@model_app.command("list")
def model_list() -> None:
    """Every registered version, newest first, with its stage."""
    from rich.table import Table

    from schemas.registry import versions

    factory, database = _registry_session()
    table = Table(title="model versions")
    for col in ("version", "stage", "promoted", "demo", "path"):
        table.add_column(col)
    for v in versions(factory):
        table.add_row(v.version, v.stage, f"{v.promoted_at:%Y-%m-%d %H:%M}" if v.promoted_at else "", str(v.demo), v.path)
    console.print(table)
    database.close()


@model_app.command("promote")
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


@model_app.command("rollback")
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


bench_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Benchmarks: ratios against a baseline measured in the same run.")
app.add_typer(bench_app, name="bench")


@bench_app.command("clip")
def bench_clip_command(
    trips: Annotated[int, typer.Option(min=1, help="simulated trips (2 cameras, 10-s segments)")] = 6,
    trip_seconds: Annotated[float, typer.Option(min=4.0)] = 30.0,
    footage: Annotated[Path | None, typer.Option(help="../shared/videos: also measure on real footage")] = None,
) -> None:
    """Clip building (sample, stack, npz) in clip-seconds per CPU-second against decoding the same files alone."""
    import tempfile

    from rich.table import Table

    from streams.bench import bench_clip, bench_clip_footage

    settings = build_settings()
    with tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work, console.status("writing segments, measuring"):
        runs = [("simulated 320x180 + 160x120 MPEG-4", bench_clip(Path(work), settings, trips=trips, trip_s=trip_seconds))]
    if footage is not None:
        runs.append(("real footage: 960x540 H.264 road, 2 driver files", bench_clip_footage(footage, settings)))
    table = Table(title=f"clip building vs decoding alone ({settings.max_pixels} px per stacked frame, CPU time)")
    for col in ("workload", "clips", "clip-s", "decode-only clip-s/CPU-s", "building clip-s/CPU-s", "ratio"):
        table.add_column(col)
    for name, r in runs:
        table.add_row(name, str(r.clips), f"{r.clip_seconds:.0f}", f"{r.decode_rate:.1f}", f"{r.build_rate:.1f}",
                      f"[bold]{r.ratio:.2f}[/]")
    console.print(table)
    console.print("ratio = clip building's speed as a share of the decode-only limit (target >= 0.80)")


@bench_app.command("join")
def bench_join_command(
    vehicles: Annotated[int, typer.Option(min=1)] = 50,
    segments_per_camera: Annotated[int, typer.Option(min=1)] = 40,
    broker: Annotated[bool, typer.Option(help="also run the workload through a broker and a Faust joiner (~75 s)")] = True,
    grace_seconds: Annotated[float, typer.Option(min=0.0, help="the joiner's vehicle-idle time in the broker run (settle: half)")] = 1.0,
) -> None:
    """Pure join throughput (segments per CPU-second) against only validating the same messages; then the same
    workload through the broker (embedded Tansu unless DRIVECOACH_KAFKA_BOOTSTRAP is set) and one joiner process."""
    import tempfile

    from streams.bench import BenchError, bench_join, bench_join_broker, bench_join_state

    settings = build_settings()
    result = bench_join(settings, vehicles=vehicles, per_vehicle=segments_per_camera)
    console.print(f"pure join: {result.segments} segments -> {result.clips} clips in {result.cpu_s:.3f} CPU s = "
                  f"[bold]{result.segments_per_s:,.0f} segments/s[/]; {result.ratio_to_parse:.1f}x the cost of "
                  f"validating the messages alone ({result.parse_cpu_s:.3f} s)")
    st = bench_join_state(settings)
    console.print(
        f"join state per vehicle ({st.driving_s / 3600:g} h driving in real time, {st.segment_s:g}-s segments): "
        f"table value [bold]{st.table_bytes_mean:,.0f} B[/] mean, {st.table_bytes_max:,} B max while driving; "
        f"[bold]{st.table_bytes_idle} B[/] after {st.idle_s / 3600:g} h idle (deleted: a tombstone in the changelog); "
        f"window manifests in the blob store: {st.manifest_bytes_per_hour / 1024:,.0f} KiB per hour of driving "
        f"({st.windows_per_hour:.0f} windows)")
    if not broker:
        return
    with tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work, console.status("through the broker") as status:
        try:
            b = bench_join_broker(settings, Path(work), vehicles=vehicles, per_vehicle=segments_per_camera,
                                  grace_s=grace_seconds, progress=status.update)
        except BenchError as err:
            console.print(f"[red]through the broker:[/] {err}")
            raise typer.Exit(1) from err
    console.print(
        f"through the broker: {b.segments} segments -> {b.clips}/{b.expected_clips} expected clips "
        f"({b.unexpected_clips} others) in {b.wall_s:.1f} s wall = [bold]{b.segments_per_s:,.0f} segments/s[/], "
        f"[bold]{b.segments_per_s / result.segments_per_s:.4f}x[/] the pure join's rate "
        f"(1/{result.segments_per_s / b.segments_per_s:.0f})"
    )
    console.print(
        f"  wall: first send -> last clip read back from `clips`, the {b.grace_s:g}-s idle grace of the vehicles' "
        f"last clips included; sending alone took {b.publish_s:.1f} s; not counted: {b.startup_s:.0f} s joiner "
        "start, group join and warm-up clip"
    )
    if b.joiner_cpu_s is not None and b.clip_pool_cpu_s is not None:
        console.print(
            f"  joiner CPU in that window: {b.joiner_cpu_s:.1f} s in the joiner process (Faust, Kafka clients, join, "
            f"state table) = {b.segments_per_joiner_cpu_s:,.0f} segments/CPU-s, "
            f"{b.segments_per_joiner_cpu_s / result.segments_per_s:.3f}x the pure join; "
            f"{b.clip_pool_cpu_s:.1f} s building {b.clips} clips in its pool ({b.clip_pool_cpu_s / max(b.clips, 1):.3f} s each)"
        )


@bench_app.command("infer")
def bench_infer_command(
    clips: Annotated[int, typer.Option(min=1, help="simulated clips (the same for every engine)")] = 16,
    batch: Annotated[int, typer.Option(min=1, help="clips per vLLM batch")] = 8,
    model: Model = None,
    engines: Annotated[str, typer.Option(help="comma-separated: transformers,vllm")] = "transformers,vllm",
) -> None:
    """Clips per second and p50/p95 latency per engine on the same model and clips, and the ratio to transformers."""
    import tempfile

    from rich.table import Table

    from streams.bench import bench_infer

    settings = build_settings()
    with tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work, console.status("loading engines, inferring"):
        results = bench_infer(settings, Path(work), clips=clips, batch=batch, model=model,
                              engines=[e.strip() for e in engines.split(",") if e.strip()])
    table = Table(title=f"inference: {clips} clips of {results[0].frames} frames, {results[0].model}")
    for col in ("engine", "batch", "clips/s", "p50 ms", "p95 ms", "generated tok/s", "vs transformers"):
        table.add_column(col)
    base = next((r for r in results if r.engine == "transformers"), results[0])
    for r in results:
        table.add_row(r.engine, str(r.batch), f"{r.clips_per_s:.2f}", f"{r.p50_ms:.0f}", f"{r.p95_ms:.0f}",
                      f"{r.tokens_per_s:.0f}", f"[bold]{r.clips_per_s / base.clips_per_s:.2f}x[/]")
    console.print(table)
    same = all(r.answers == base.answers for r in results)
    console.print("latency = submit to answer for each clip (a clip waits for its whole batch); greedy answers "
                  + ("[green]identical across engines[/]" if same else "[red]differ between engines[/]"))


@bench_app.command("train")
def bench_train_command(
    steps: Annotated[int, typer.Option(min=1)] = 40,
    processes: Annotated[int, typer.Option(min=1, help="torchrun processes (ZeRO-2 ranks)")] = 2,
) -> None:
    """Fine-tuning throughput of the tiny model on CPU (ZeRO-2 under torchrun): samples and tokens per second."""
    import tempfile

    from streams.bench import bench_train

    settings = build_settings(max_pixels=4704)
    with tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work, console.status("fine-tuning"):
        r = bench_train(settings, Path(work), steps=steps, processes=processes)
    console.print(f"ZeRO-2, {r.processes} CPU processes, {r.steps} steps: [bold]{r.samples_per_s:.1f} samples/s[/], "
                  f"[bold]{r.tokens_per_s:,.0f} tokens/s[/] ({r.tokens_per_sample:.0f} tokens per sample: 20 frames of "
                  f"56x84 and both turns); launch to finish {r.wall_s:.0f} s (start-up included)")


@bench_app.command("reports")
def bench_reports_command(
    events: Annotated[int, typer.Option(min=100, help="detected events to generate")] = 1_000_000,
    fleets: Annotated[int, typer.Option(min=1, help="fleets (sizes skewed; the median one is measured)")] = 20,
    repeat: Annotated[int, typer.Option(min=1, help="timed runs per query, after one warm-up run")] = 30,
    keep: Annotated[bool, typer.Option(help="keep the scratch database (and the fleet's role) for EXPLAIN")] = False,
) -> None:
    """The safety managers' report and console queries on a scratch database of generated events: p50/p95/max ms
    per query under the fleet's role (row-level security) and as the table owner."""
    from rich.table import Table

    from streams.bench import bench_reports

    settings = build_settings()
    with console.status("generating") as status:
        def progress(message: str) -> None:
            console.print(f"  {message}")
            status.update(message)

        r = bench_reports(settings, events=events, fleets=fleets, repeat=repeat, keep=keep, progress=progress)
    console.print("rows: " + ", ".join(f"{table} {n:,}" for table, n in r.rows.items()))
    console.print(f"generated in [bold]{r.generate_s:.0f} s[/] (SQL), VACUUM ANALYZE {r.analyze_s:.0f} s; measured fleet "
                  f"{r.fleet_id} ({r.fleet_events:,} events, the median fleet), data up to {r.end_day}")
    table = Table(title=f"report queries, {repeat} runs each after a warm-up (wall ms)")
    for col in ("query", "as", "rows", "p50 ms", "p95 ms", "max ms"):
        table.add_column(col)
    for q in r.queries:
        p95 = f"[bold red]{q.p95_ms:.1f}[/]" if q.p95_ms > 100 else f"[bold]{q.p95_ms:.1f}[/]"
        table.add_row(q.query, "fleet role (RLS)" if q.rls else "table owner", str(q.rows), f"{q.p50_ms:.1f}", p95,
                      f"{q.max_ms:.1f}")
    console.print(table)
    console.print("target: p95 under 100 ms per query under the fleet's role (as the console and `drivecoach report` "
                  "run them); the table owner, without row-level security, is shown for comparison")


@bench_app.command("recovery")
def bench_recovery_command(
    trials: Annotated[int, typer.Option(min=1, help="trials, each killing the joiner or the worker once")] = 10,
    vehicles: Annotated[int, typer.Option(min=2, help="vehicles per trial, each with its own upload pattern")] = 4,
    seed: Annotated[int, typer.Option(help="seed of the patterns, kill targets and moments")] = 1,
    speed: Annotated[float, typer.Option(min=1.0, help="how much faster than real time the fleet uploads")] = 8.0,
    model: Model = None,
) -> None:
    """The recovery soak: SIGKILL the joiner or the worker at a random moment while a fleet uploads in mixed cadences
    (real time, bursts, outages, backlogs, a lagging camera), then check Postgres: no clip or segment lost, no
    duplicate rows, every dead letter justified. Uses the embedded broker unless DRIVECOACH_KAFKA_BOOTSTRAP is set."""
    import tempfile
    import uuid
    from contextlib import ExitStack

    from sqlalchemy.orm import sessionmaker

    from streams.bench import _drop_scratch, _scratch_database
    from streams.broker import EmbeddedBroker
    from streams.database import make_engine, migrate
    from streams.demo import demo_model_settings, ensure_demo_model
    from streams.soak import TrialResult, run_soak

    settings = build_settings(model=model)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drivecoach-soak-")))
        if not settings.model:
            settings = demo_model_settings(settings).model_copy(
                update={"model": str(ensure_demo_model(settings, console))})
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=work / "broker.log")).bootstrap
            settings = settings.model_copy(update={"one_record_per_batch": True})
        # A database of its own: the soak promotes its model, and its rows are no fleet's.
        database = _scratch_database(settings, f"drivecoach_soak_{uuid.uuid4().hex[:6]}")
        stack.callback(database.close)
        stack.callback(_drop_scratch, database, None)
        migrate(database.url)
        engine = make_engine(database.url)
        stack.callback(engine.dispose)
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap, "home": work / "home",
                                               "database_url": database.url.render_as_string(hide_password=False)})

        def show(r: TrialResult) -> None:
            mark = "[green]ok[/]" if r.ok else "[bold red]FAILED[/]"
            console.print(
                f"trial {r.trial:3d}: killed the {r.killed} at {r.killed_at_s:4.1f} s; {r.segments} segments, "
                f"{r.expected_clips} clips ({r.revised_clips} answers of earlier revisions kept), "
                f"{r.dead_letters} dead letters, {r.seconds:.0f} s: {mark} {', '.join(sorted(set(r.patterns)))}"
                + ("" if r.ok else f"\n  lost {r.lost_clips} unexpected {r.unexpected_clips} unanswered "
                   f"{r.unanswered_clips} duplicates {r.duplicate_rows} unjustified {r.unjustified_dead_letters}"))

        console.print(f"soak: {trials} trials x {vehicles} vehicles at {speed:g}x; logs in {work / 'logs'}")
        results = run_soak(settings, sessionmaker(engine), work, trials=trials, seed=seed, speed=speed,
                           vehicles=vehicles, progress=show)
    failed = [r for r in results if not r.ok]
    kills = {name: sum(r.killed == name for r in results) for name in ("joiner", "worker")}
    console.print(
        f"[bold]{len(results) - len(failed)}/{len(results)} trials ok[/]: kills joiner {kills['joiner']}, worker "
        f"{kills['worker']}; segments {sum(r.segments for r in results)}, clips {sum(r.expected_clips for r in results)}"
        f"; lost clips {sum(len(r.lost_clips) for r in results)}, unexpected clips "
        f"{sum(len(r.unexpected_clips) for r in results)}, unanswered {sum(len(r.unanswered_clips) for r in results)}, "
        f"duplicate rows {sum(r.duplicate_rows for r in results)}, dead letters {sum(r.dead_letters for r in results)} "
        f"(unjustified {sum(len(r.unjustified_dead_letters) for r in results)})")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
