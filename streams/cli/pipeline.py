"""The pipeline's processes: demo, joiner, worker, the embedded broker, a vLLM server, migrations, retraining."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.options import Bootstrap, Model, build_settings, configure_logging, console

app = typer.Typer()


@app.command()
def demo(
    vehicles: Annotated[int, typer.Option(min=1, help="simulated vehicles")] = 4,
    trips: Annotated[int, typer.Option(min=1, help="trips per vehicle")] = 3,
    seed: Annotated[int, typer.Option(help="simulation seed (the demo model trains on another)")] = 7,
    model: Model = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every clip")] = 420.0,
    home: Annotated[Path | None, typer.Option(help="working dir (default .drivecoach)")] = None,
    review: Annotated[
        bool, typer.Option(help="a simulated safety manager reviews every answer (training labels)")
    ] = False,
    serve_console: Annotated[
        bool,
        typer.Option(
            "--console/--no-console",
            help="then serve the safety managers' console, with a demo sign-in, until Ctrl-C",
        ),
    ] = True,
    console_port: Annotated[
        int | None, typer.Option(help="the console's port; default DRIVECOACH_CONSOLE_PORT (8080)")
    ] = None,
) -> None:
    """Run every stage on embedded defaults with simulated vehicles, print the report, then serve the console."""
    from streams.demo import run_demo

    configure_logging("WARNING")
    settings = build_settings(model=model, home=home, console_port=console_port)
    run_demo(
        settings,
        vehicles=vehicles,
        trips=trips,
        seed=seed,
        timeout_s=timeout,
        console=console,
        review=review,
        serve_console=serve_console,
    )


@app.command()
def joiner(
    bootstrap: Bootstrap = "",
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus /metrics port (0 = off); default DRIVECOACH_METRICS_PORT")
    ] = None,
) -> None:
    """Run a Faust joiner: camera topics in, clip plans out to `clip-plans` (blocks; SIGTERM stops it cleanly)."""
    from streams.joiner.app import run_joiner

    settings = build_settings(kafka_bootstrap=bootstrap or None, metrics_port=metrics_port)
    if not settings.kafka_bootstrap:
        console.print(
            "[red]configuration error:[/] the joiner needs --bootstrap or DRIVECOACH_KAFKA_BOOTSTRAP."
        )
        raise typer.Exit(2)
    run_joiner(settings, settings.kafka_bootstrap)


@app.command()
def builder(
    bootstrap: Bootstrap = "",
    processes: Annotated[
        int | None, typer.Option(help="clip-building processes; default DRIVECOACH_CLIP_WORKERS")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus /metrics port (0 = off); default DRIVECOACH_METRICS_PORT")
    ] = None,
) -> None:
    """Run a clip builder: `clip-plans` in, built clips out to `clips` (blocks; SIGTERM finishes what is in flight).
    Run as many as decoding needs: they share the `clip-plans` partitions as one consumer group."""
    from streams.builder.app import run_builder

    configure_logging()
    settings = build_settings(
        kafka_bootstrap=bootstrap or None, clip_workers=processes, metrics_port=metrics_port
    )
    if not settings.kafka_bootstrap:
        console.print(
            "[red]configuration error:[/] the builder needs --bootstrap or DRIVECOACH_KAFKA_BOOTSTRAP."
        )
        raise typer.Exit(2)
    run_builder(settings, settings.kafka_bootstrap)


@app.command()
def worker(
    bootstrap: Bootstrap = "",
    model: Model = None,
    engine: Annotated[
        str | None, typer.Option(help="transformers | vllm | openai; default DRIVECOACH_ENGINE")
    ] = None,
) -> None:
    """Run the inference worker: consume `clips` in batches, run the CoT, write Postgres, then commit offsets."""
    from sqlalchemy.orm import sessionmaker

    from schemas.generation import is_demo_model
    from schemas.registry import serve_or_adopt
    from streams.inference.engines.base import model_version_of
    from streams.inference.engines.factory import load_engine
    from streams.inference.worker import InferenceWorker
    from streams.infra import metrics
    from streams.infra.database import make_engine, resolve_database_url

    configure_logging()
    settings = build_settings(kafka_bootstrap=bootstrap or None, model=model, engine=engine)
    if not settings.kafka_bootstrap or not settings.model:
        console.print(
            "[red]configuration error:[/] the worker needs --bootstrap and --model (or their env variables)."
        )
        raise typer.Exit(2)
    database = resolve_database_url(settings)
    factory = sessionmaker(make_engine(database.url))
    local = Path(settings.model)
    configured = model_version_of(settings.model)
    serving = serve_or_adopt(
        factory,
        version=configured,
        path=str(local.resolve()) if local.exists() else settings.model,
        demo=is_demo_model(settings.model),
    )
    if serving.version != configured:
        console.print(
            f"serving the production model {serving.version} ({serving.path}), not {settings.model}"
        )
    loop = InferenceWorker(
        settings,
        settings.kafka_bootstrap,
        lambda path: load_engine(settings, path),
        factory,
        model_path=serving.path,
    )
    metrics.serve(settings.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    loop.run()
    database.close()


@app.command()
def migrate(
    pipeline_login: Annotated[
        str | None,
        typer.Option(
            help="also create (or reset the password of) this Postgres login for the inference worker, with only "
            "the grants it uses; its password from DRIVECOACH_PIPELINE_DB_PASSWORD"
        ),
    ] = None,
    console_login: Annotated[
        str | None,
        typer.Option(
            help="likewise for the console server (its own tables; fleet data only as the fleet's role); its "
            "password from DRIVECOACH_CONSOLE_DB_PASSWORD"
        ),
    ] = None,
    retention_login: Annotated[
        str | None,
        typer.Option(
            help="likewise for the retention job (deletes expired answers, clips and blobs, logs what it deleted); "
            "its password from DRIVECOACH_RETENTION_DB_PASSWORD"
        ),
    ] = None,
    training_login: Annotated[
        str | None,
        typer.Option(
            help="likewise for the retraining job (reads reviewed labels, records runs and model versions); its "
            "password from DRIVECOACH_TRAINING_DB_PASSWORD"
        ),
    ] = None,
    webhooks_login: Annotated[
        str | None,
        typer.Option(
            help="likewise for the webhook delivery process (reads endpoints and due deliveries, records attempts); "
            "its password from DRIVECOACH_WEBHOOKS_DB_PASSWORD"
        ),
    ] = None,
) -> None:
    """Create or upgrade the database schema (Alembic) on the configured Postgres, as its owner; with the login
    options, the services' own least-privilege logins too (deploy/README.md, "Database roles")."""
    from streams.infra.database import make_engine, resolve_database_url
    from streams.infra.database import migrate as run_migrations
    from streams.infra.roles import (
        CONSOLE_GROUP,
        PIPELINE_GROUP,
        RETENTION_GROUP,
        TRAINING_GROUP,
        WEBHOOKS_GROUP,
        ensure_login,
    )

    configure_logging()
    settings = build_settings()
    requested = [
        (pipeline_login, settings.pipeline_db_password, PIPELINE_GROUP, "DRIVECOACH_PIPELINE_DB_PASSWORD"),
        (console_login, settings.console_db_password, CONSOLE_GROUP, "DRIVECOACH_CONSOLE_DB_PASSWORD"),
        (training_login, settings.training_db_password, TRAINING_GROUP, "DRIVECOACH_TRAINING_DB_PASSWORD"),
        (
            retention_login,
            settings.retention_db_password,
            RETENTION_GROUP,
            "DRIVECOACH_RETENTION_DB_PASSWORD",
        ),
        (webhooks_login, settings.webhooks_db_password, WEBHOOKS_GROUP, "DRIVECOACH_WEBHOOKS_DB_PASSWORD"),
    ]
    logins = [(login, *rest) for login, *rest in requested if login is not None]
    for login, password, _, variable in logins:
        if not password:
            console.print(f"[red]configuration error:[/] the login {login} needs {variable} set.")
            raise typer.Exit(2)
    database = resolve_database_url(settings)
    run_migrations(database.url)
    console.print(f"schema at head on {database.url.render_as_string(hide_password=True)}")
    if logins:
        engine = make_engine(database.url)
        try:
            for login, password, group, _ in logins:
                ensure_login(engine, login, password, group)
                console.print(f"login {login} may connect as a member of {group}")
        finally:
            engine.dispose()
    database.close()


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="directory for the segment videos and truth.json")] = Path("sim"),
    seed: int = 7,
    count: Annotated[int, typer.Option(min=1)] = 8,
    vehicles: Annotated[int, typer.Option(min=1)] = 4,
    upload: Annotated[
        bool,
        typer.Option(
            "--upload",
            help="put every segment into the blob store and write its claim-check message to messages.jsonl",
        ),
    ] = False,
    blob_url: Annotated[
        str | None,
        typer.Option(
            help="the blob store for --upload: s3://bucket/prefix; default DRIVECOACH_BLOB_URL, else the "
            "blob directory"
        ),
    ] = None,
    bootstrap: Annotated[
        str,
        typer.Option(help="also publish the claim checks to this Kafka's camera topics (implies --upload)"),
    ] = "",
) -> None:
    """Render simulated dashcam trips (road + driver segments) with their ground truth; with --upload (or
    --blob-url, --bootstrap) put them into the blob store, a directory or S3, and write (and publish) claim checks
    instead of inline video, as a device gateway would."""
    import json

    from streams.simulate import make_scenarios, write_segments

    store, messages = None, []
    if upload or blob_url or bootstrap:
        from streams.demo import to_messages
        from streams.infra.blobs import open_blob_store

        settings = build_settings(blob_url=blob_url)
        store = open_blob_store(settings)
    truth = []
    for s in make_scenarios(seed, count, vehicles=vehicles):
        segs = write_segments(s, out / s.scenario_id)
        if store is not None:
            messages += to_messages(segs, store)
        truth.append(
            {
                "scenario_id": s.scenario_id,
                "vehicle_id": s.vehicle_id,
                "start_ts": s.start_ts,
                "duration": s.duration,
                "events": [e.model_dump(mode="json") for e in s.events],
                "instruction": s.instruction,
                "segments": [str(g.path) for g in segs],
            }
        )
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    console.print(f"{count} scenarios in {out}")
    if store is None:
        return
    messages.sort(key=lambda m: m.end_ts)  # device-clock order across vehicles, as a fleet's gateways upload
    (out / "messages.jsonl").write_text("".join(m.model_dump_json() + "\n" for m in messages))
    console.print(f"{len(messages)} segments in {store.spec}; their claim checks in {out / 'messages.jsonl'}")
    if bootstrap:
        from streams.producer import make_producer, publish

        producer = make_producer(bootstrap, settings)
        try:
            sent = publish(producer, messages, settings)
        finally:
            producer.close()
        console.print(f"{sent} claim checks published to {bootstrap}")


@app.command()
def broker(port: int = 9092) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory-only) in the foreground."""
    from streams.infra.broker import EmbeddedBroker

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Both stop it, and the broker with it: SIGTERM (kill, systemd, Kubernetes) and SIGINT even in a background job,
    # where the shell starts it with SIGINT ignored (Python would keep that).
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
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
    from streams.inference.engines.vllm import checkpoint_dtype
    from streams.inference.engines.vllm_server import serve_args, server_env

    settings = build_settings()
    args = serve_args(
        model,
        port=port,
        host=host,
        max_model_len=settings.vllm_max_model_len,
        max_pixels=settings.max_pixels,
        enforce_eager=settings.vllm_enforce_eager,
        dtype=checkpoint_dtype(model, settings.vllm_dtype),
    )
    os.execvpe(args[0], args, server_env())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def retrain(ctx: typer.Context) -> None:
    """The scheduled retraining job: export -> fine-tune -> evaluate -> promote (`python -m training.retrain`;
    its options pass through: --min-new-reviews, --metric, --margin, --min-confidence, --nproc, --launcher, --hostfile, --lr, ...)."""
    from streams.infra.database import migrate, resolve_database_url

    database = resolve_database_url(build_settings())
    # Like the worker and the console: a fresh database gets the schema, not a traceback.
    migrate(database.url)
    url = database.url.render_as_string(hide_password=False)
    # Through the environment, not argv: a password in the URL must not show in the process list.
    args = [sys.executable, "-m", "training.retrain", *ctx.args]
    os.execvpe(args[0], args, {**os.environ, "DRIVECOACH_DATABASE_URL": url})
