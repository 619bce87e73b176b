"""`drivecoach demo`: every stage on embedded defaults, simulated vehicles through to a report, then shut down."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypedDict

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import Clip, Event, Inference, Instruction, RuleEventRow
from schemas.frames import load_frames_bytes
from schemas.generation import TransformersEngine, is_demo_model
from schemas.messages import ClipMessage, SegmentMessage, TelemetrySample
from schemas.prompts import PROMPT_VERSION, answer_types
from schemas.registry import deploy
from schemas.scoring import EventScores, TypeScore, score_events
from schemas.taxonomy import EventType
from streams.builder.clip import ClipFrames, sample_times, stack, stack_geometry
from streams.errors import DrivecoachError
from streams.inference.engines.base import model_version_of
from streams.infra.blobs import BlobStore, open_blob_store
from streams.infra.broker import EmbeddedBroker
from streams.infra.database import make_engine, migrate, resolve_database_url
from streams.infra.processes import settings_env, start_command, stop_processes
from streams.infra.topics import ensure_topics
from streams.joiner.join import JoinRules, expected_fleet_clips
from streams.joiner.windows import WindowStore
from streams.producer import make_producer, publish, upload
from streams.settings import Settings
from streams.simulate import (
    Scenario,
    SimSegment,
    make_scenarios,
    render_driver,
    render_road,
    telemetry,
    write_segments,
)

ROAD_SIZE, DRIVER_SIZE = (320, 180), (160, 120)


class DemoModelRecipe(TypedDict):
    """What the DEMO model is trained from and how; its JSON (with the prompt version) keys the model's cache."""

    train_seed: int
    scenarios: int
    steps: int
    vision_warmup_steps: int
    lr: float
    event_aux_weight: float
    model_seeds: list[int]
    selection_step: int
    freeze_vision_at_step: int
    max_pixels: int
    trip_s: float
    no_telemetry_every: int
    version: int


# The DEMO model's recipe, measured on the 2-core machine (docs/demo-model.md): 10-s trips in 5-s segments, and
# 4,704 pixels per stacked frame (56 x 84: 6 tokens per frame pair) instead of the paper's 16,384. With ~400 video
# tokens per clip the 1 M-parameter model, trained from random weights in minutes, never learns to find a cue a few
# tokens big and answers every clip alike; with ~60 it reads the video. Real checkpoints use the settings as given.
DEMO_MODEL_RECIPE: DemoModelRecipe = {
    "train_seed": 1000,
    "scenarios": 480,
    "steps": 3750,
    "vision_warmup_steps": 3000,
    "lr": 3e-3,
    "event_aux_weight": 3.0,
    # Trained side by side (one core each) up to the selection step; the one with the lower training loss there goes
    # on alone on every core. From random weights the seed decides whether a cue is learned (docs/demo-model.md:
    # 0.96 against 0.80), and the loss shows it early (1,000 steps in: 0.65 against 1.02, final 0.27 and 0.77).
    "model_seeds": [0, 1],
    "selection_step": 1000,
    # From there the vision tower is frozen too: the kept seed trains its language model alone, 30 % less a step.
    "freeze_vision_at_step": 1000,
    "max_pixels": 4704,
    "trip_s": 10.0,
    "no_telemetry_every": 10,
    "version": 7,
}
DEMO_SEGMENT_S = 5.0
SFT_LOG_EVERY = 250  # steps between the seeds' loss lines, which the selection reads
DEMO_MANAGER = "demo"
MODEL_TOOL_MODULE = "training.sft"  # builds the tiny base itself when --model is omitted


class DemoTimeout(DrivecoachError):
    """Not every clip reached Postgres in time."""


# The simulator dates its trips from 2025-10-09 (the frames the DEMO model was trained on show those times), and a
# simulated fleet uploads each trip in one burst: a joiner for simulated footage accepts it at any age and judges a
# vehicle idle after seconds, not the production default's 10 minutes of silence.
SIMULATED_FLEET_JOIN = {"max_segment_age_s": 10 * 365 * 86400.0, "vehicle_idle_s": 5.0, "settle_s": 2.0}


def simulated_fleet_settings(settings: Settings) -> Settings:
    """The joiner settings for simulated footage (SIMULATED_FLEET_JOIN), unless the user's are stricter."""
    return Settings(
        **{
            **settings.model_dump(),
            "max_segment_age_s": max(settings.max_segment_age_s, SIMULATED_FLEET_JOIN["max_segment_age_s"]),
            "vehicle_idle_s": min(settings.vehicle_idle_s, SIMULATED_FLEET_JOIN["vehicle_idle_s"]),
            "settle_s": min(settings.settle_s, SIMULATED_FLEET_JOIN["settle_s"]),
        }
    )


def scenario_frames(s: Scenario, settings: Settings) -> ClipFrames:
    """The stacked frames of a whole trip, rendered directly: the demo model's training input."""
    geometry = stack_geometry(ROAD_SIZE, DRIVER_SIZE, settings.max_pixels)
    times = sample_times(0.0, s.duration, settings.sample_fps, settings.max_frames)
    frames = np.stack(
        [stack(render_road(s, t, ROAD_SIZE), render_driver(s, t, DRIVER_SIZE), geometry) for t in times]
    )
    return ClipFrames(
        frames=frames, times=np.asarray(times, dtype=np.float32), driver_top=geometry.road_height
    )


def scenario_telemetry(s: Scenario) -> list[TelemetrySample]:
    """The whole trip's 1 Hz telemetry, t in seconds from the trip's start: what a clip of the trip carries (the
    demo model's training input beside `scenario_frames`)."""
    return list(telemetry(s, 0.0, s.duration, clock_offset=-s.start_ts))


def scenario_clip(
    s: Scenario, frames: ClipFrames, *, clip_id: str, frames_uri: str, sample_fps: float = 2.0
) -> ClipMessage:
    """The `clips` message of a whole simulated trip whose stacked frames are stored at `frames_uri`: what the
    benchmarks and tests publish to the worker without the joiner and builders in front of it."""
    t, h, w, _ = frames.frames.shape
    return ClipMessage(
        clip_id=clip_id,
        fleet_id=s.fleet_id,
        vehicle_id=s.vehicle_id,
        driver_id=s.driver_id,
        start_ts=s.start_ts,
        end_ts=s.start_ts + s.duration,
        views=["road", "driver"],
        segments=[],
        frames_uri=frames_uri,
        num_frames=t,
        frame_width=w,
        frame_height=h,
        sample_fps=sample_fps,
        telemetry=scenario_telemetry(s),
    )


def write_training_set(
    scenarios: list[Scenario], out: Path, settings: Settings, *, no_telemetry_every: int = 0
) -> Path:
    """The trips as sft's dataset. With `no_telemetry_every` k > 0, about one trip in k (chosen by its id's hash, so
    the same trips every time) goes without telemetry, as a camera without it uploads: the model learns to answer
    from the video alone when the prompt says "no telemetry". The trips are rendered on every core (480 take 12 s
    on one)."""
    (out / "frames").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        npz = pool.map(_frames_npz, scenarios, itertools.repeat(settings), chunksize=16)
        for s, frames in zip(scenarios, npz, strict=True):
            (out / f"frames/{s.scenario_id}.npz").write_bytes(frames)
    records = []
    for s in scenarios:
        silent = (
            no_telemetry_every > 0
            and int(hashlib.sha256(s.scenario_id.encode()).hexdigest(), 16) % (no_telemetry_every) == 0
        )
        records.append(
            {
                "id": s.scenario_id,
                "vehicle_id": s.vehicle_id,
                "frames": f"frames/{s.scenario_id}.npz",
                "turn1": s.truth_turn1,
                "turn2": s.instruction,
                "telemetry": []
                if silent
                else [t.model_dump(exclude_none=True) for t in scenario_telemetry(s)],
            }
        )
    (out / "data.json").write_text(json.dumps(records, indent=1))
    return out


def _frames_npz(scenario: Scenario, settings: Settings) -> bytes:
    return scenario_frames(scenario, settings).to_npz()


def ensure_demo_model(settings: Settings, console: Console) -> Path:
    key = hashlib.sha256(json.dumps({**DEMO_MODEL_RECIPE, "prompt": PROMPT_VERSION}, sort_keys=True).encode())
    model_dir = (settings.home / "models" / f"demo-tiny-qwen2.5-vl-{key.hexdigest()[:8]}").resolve()
    if (model_dir / "drivecoach.json").is_file():
        console.print(f"demo model: [bold]{model_dir}[/] (cached; a DEMO model, not for real fleets)")
        return model_dir
    console.print(
        "building the DEMO model (tiny Qwen2.5-VL, trained on simulated trips; once, a few minutes)"
    )
    settings = demo_model_settings(settings)
    scenarios = make_scenarios(
        int(DEMO_MODEL_RECIPE["train_seed"]),
        int(DEMO_MODEL_RECIPE["scenarios"]),
        fleet_id="fleet-train",
        vehicles=24,
        duration=float(DEMO_MODEL_RECIPE["trip_s"]),
    )
    with console.status(f"rendering {len(scenarios)} simulated training trips"):
        data = write_training_set(
            scenarios,
            settings.home.resolve() / "datasets" / "demo-train",
            settings,
            no_telemetry_every=int(DEMO_MODEL_RECIPE["no_telemetry_every"]),
        )
    seeds = DEMO_MODEL_RECIPE["model_seeds"]
    runs = {seed: model_dir.with_name(f"{model_dir.name}.seed{seed}") for seed in seeds}
    logs = settings.home.resolve() / "logs"
    best, losses = train_seeds(data, runs, logs, console)
    card = runs[best] / "drivecoach.json"
    selection = {"step": DEMO_MODEL_RECIPE["selection_step"], "training_loss": losses, "kept": best}
    card.write_text(json.dumps({**json.loads(card.read_text()), "seed_selection": selection}))
    for seed, path in runs.items():
        if seed != best:
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(model_dir, ignore_errors=True)
    runs[best].rename(model_dir)
    return model_dir


def train_seeds(
    data: Path, runs: dict[int, Path], logs: Path, console: Console
) -> tuple[int, dict[int, float]]:
    """One `training.sft` process per seed, one thread each, at once, up to the recipe's selection step; then the
    seed with the lower training loss there goes on alone on every core (SIGUSR1 tells it) and the others stop:
    successive halving with one cut. Two seeds cost little more than one (a core each), and the cut saves the loser's
    remaining steps while the winner's get faster. Returns the kept seed and each seed's loss at the cut. Logs go to
    LOGS/demo-model-seedN.log; the status line shows each one's latest step."""
    logs.mkdir(parents=True, exist_ok=True)
    step = int(DEMO_MODEL_RECIPE["selection_step"])
    procs: dict[int, subprocess.Popen[bytes]] = {}
    kept: int | None = None
    losses: dict[int, float] = {}

    def log_of(seed: int) -> Path:
        return logs / f"demo-model-seed{seed}.log"

    try:
        for seed, out in runs.items():
            shutil.rmtree(out, ignore_errors=True)
            with open(log_of(seed), "wb") as log:
                procs[seed] = subprocess.Popen(
                    [*sft_command(data, out, seed), "--no-progress"], stdout=log, stderr=subprocess.STDOUT
                )
        printed = time.monotonic()
        with console.status("training the DEMO model") as status:
            while True:
                alive = {seed: p for seed, p in procs.items() if kept in (None, seed)}
                failed = {seed: p.returncode for seed, p in alive.items() if p.poll() not in (None, 0)}
                if failed:
                    raise DrivecoachError(
                        f"training the DEMO model failed (seed: exit code {failed}); see {logs}/demo-model-seed*.log"
                    )
                if kept is None:
                    found = {seed: loss_at(_read(log_of(seed)), step) for seed in procs}
                    if all(loss is not None for loss in found.values()):
                        losses = {seed: float(loss) for seed, loss in found.items() if loss is not None}
                        kept = choose_seed(losses)
                        for seed, p in procs.items():
                            if seed != kept:
                                p.terminate()
                                p.wait()
                        if hasattr(signal, "SIGUSR1"):
                            procs[kept].send_signal(signal.SIGUSR1)
                        console.print(
                            f"training loss at step {step}: "
                            + ", ".join(f"seed {seed} {loss:.3f}" for seed, loss in losses.items())
                            + f"; seed {kept} goes on alone"
                        )
                    elif all(p.poll() == 0 for p in procs.values()):
                        raise DrivecoachError(f"no seed logged a loss at step {step}; see {logs}")
                elif procs[kept].poll() == 0:
                    return kept, losses
                line = "training the DEMO model: " + "; ".join(
                    f"seed {seed}: {_last_step(log_of(seed))}" for seed in alive
                )
                status.update(line)
                if not console.is_terminal and time.monotonic() - printed > 60:
                    console.print(line)  # a log file or CI gets a line a minute instead of the status line
                    printed = time.monotonic()
                time.sleep(1)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait()


def loss_at(log: str, step: int) -> float | None:
    """The mean training loss an sft log gives at `step` ("step 1000/4500  loss 0.8961 ..."); None before then."""
    found = re.search(rf"^step {step}/\d+\s+loss ([0-9.]+)", log, re.MULTILINE)
    return float(found.group(1)) if found else None


def choose_seed(losses: dict[int, float]) -> int:
    """The seed with the lowest loss (the lower seed on a tie)."""
    return min(losses, key=lambda seed: (losses[seed], seed))


def sft_command(data: Path, out: Path, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        MODEL_TOOL_MODULE,
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(DEMO_MODEL_RECIPE["steps"]),
        "--seed",
        str(seed),
        "--lr",
        str(DEMO_MODEL_RECIPE["lr"]),
        "--event-aux-weight",
        str(DEMO_MODEL_RECIPE["event_aux_weight"]),
        "--vision-warmup-steps",
        str(DEMO_MODEL_RECIPE["vision_warmup_steps"]),
        "--freeze-vision-at-step",
        str(DEMO_MODEL_RECIPE["freeze_vision_at_step"]),
        "--log-every",
        str(SFT_LOG_EVERY),
    ]


def _read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


def _last_step(log: Path) -> str:
    """The newest progress line of an sft log ("vision warm-up 750/3000 ...", "step 250/4500 ..."), shortened."""
    steps = [line for line in _read(log).splitlines() if line.startswith(("step ", "vision warm-up "))]
    return " ".join(steps[-1].split()[:5]) if steps else "starting"


def demo_model_settings(settings: Settings) -> Settings:
    """The settings the DEMO model was trained for (its frame size); a real checkpoint keeps the user's."""
    return settings.model_copy(update={"max_pixels": DEMO_MODEL_RECIPE["max_pixels"]})


def to_messages(segments: list[SimSegment], blobs: BlobStore) -> list[SegmentMessage]:
    """What a device gateway uploads: each camera file put in the blob store (a directory or S3), the message
    carries the claim check."""
    out = []
    for seg in sorted(segments, key=lambda s: (s.end_ts, s.camera)):
        uri = upload(blobs, seg.vehicle_id, seg.segment_id, seg.path)
        out.append(
            SegmentMessage(
                fleet_id=seg.fleet_id,
                vehicle_id=seg.vehicle_id,
                driver_id=seg.driver_id,
                camera=seg.camera,
                segment_id=seg.segment_id,
                start_ts=seg.start_ts,
                end_ts=seg.end_ts,
                fps=seg.fps,
                width=seg.width,
                height=seg.height,
                codec=seg.codec,
                video_uri=uri,
                telemetry=list(seg.telemetry),
            )
        )
    return out


def expected_clip_extents(
    messages: list[SegmentMessage], settings: Settings
) -> dict[str, tuple[str, float, float]]:
    """Each clip the join must produce (vehicle, start, end), by the join's oracle on each vehicle's complete set of
    segments."""
    return {
        p.clip_id: (p.vehicle_id, p.start_ts, p.end_ts)
        for p in expected_fleet_clips(messages, JoinRules.from_settings(settings))
    }


@dataclass
class DemoRun:
    scenarios: list[Scenario]
    expected: dict[str, tuple[str, float, float]]
    segments: int
    model_version: str
    wall_s: float


@dataclass(frozen=True)
class Services:
    """What the demo started or found: the broker, Postgres (migrated) and the settings that point at them."""

    settings: Settings
    bootstrap: str
    engine: Engine
    factory: sessionmaker[Session]
    since: datetime  # the database's clock when the run began: the clips landed since are this run's


def run_demo(
    settings: Settings,
    *,
    vehicles: int,
    trips: int,
    seed: int,
    timeout_s: float,
    console: Console,
    review: bool = False,
    serve_console: bool = False,
) -> DemoRun:
    started = time.monotonic()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (`kill`, a supervisor) unwinds like Ctrl-C, so the broker, embedded Postgres and workers this demo
        # started stop with it; uvicorn re-raises the SIGTERM it caught once the console has shut down.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logs = settings.home.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    model_path, trip_s, settings = choose_model(settings, console)
    with ExitStack() as stack:
        services = start_services(stack, settings, logs, console)
        deploy(
            services.factory,
            version=model_version_of(model_path),
            path=str(Path(model_path).resolve()),
            demo=is_demo_model(model_path),
        )  # the worker serves the production model
        settings = simulated_fleet_settings(services.settings)
        procs = start_pipeline(stack, settings, services, model_path, logs, console)
        scenarios = make_scenarios(seed, vehicles * trips, vehicles=vehicles, duration=trip_s)
        with _progress(console) as progress:
            messages = upload_fleet(progress, scenarios, settings, services.bootstrap, seed)
            expected = expected_clip_extents(messages, settings)
            wait_for_clips(progress, services, set(expected), procs, timeout_s=timeout_s, logs=logs)
        model_version = _model_version(services.factory, set(expected))
        run = DemoRun(scenarios, expected, len(messages), model_version, time.monotonic() - started)
        print_report(console, services.factory, run)
        print_telemetry_comparison(console, services.factory, run, model_path, settings)
        if review:
            accepted, corrected = simulate_reviews(services.factory, run)
            console.print(
                f"simulated safety manager: {accepted} answers accepted, {corrected} corrected "
                "(labels for `drivecoach retrain`)"
            )
        if serve_console:
            stop_processes(list(procs.values()))  # every clip is in: the console gets the two cores
            fleet_id = scenarios[0].fleet_id
            serve_demo_console(
                settings, services.engine, services.factory, fleet_id=fleet_id, console=console
            )
    return run


def choose_model(settings: Settings, console: Console) -> tuple[Path, float, Settings]:
    """The user's checkpoint with 20-s trips, or a DEMO model (the one built here, or one given by path: a retrained
    candidate, a recipe experiment) with the trips and frame size it was trained on: at the default 16,384 pixels a
    DEMO model sees frames it never learned and names no event (measured: 0 of 100 answers right)."""
    if settings.model and not is_demo_model(settings.model):
        return Path(settings.model), 20.0, settings
    if settings.model:
        console.print(f"{settings.model} is a DEMO model: served at the frame size it was trained on")
        return Path(settings.model), float(DEMO_MODEL_RECIPE["trip_s"]), demo_model_settings(settings)
    model_path = ensure_demo_model(settings, console)
    return model_path, float(DEMO_MODEL_RECIPE["trip_s"]), demo_model_settings(settings)


def start_services(stack: ExitStack, settings: Settings, logs: Path, console: Console) -> Services:
    """The configured Kafka (else the embedded broker) and Postgres (else local, else embedded), migrated."""
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        bootstrap = stack.enter_context(EmbeddedBroker(log_path=logs / "broker.log")).bootstrap
        settings = settings.model_copy(update={"one_record_per_batch": True})
        # The embedded broker keeps nothing between runs, so neither may the join's durable half: the emitted
        # windows' manifests of an earlier run would make this run's uploads duplicates (streams/joiner/windows.py).
        WindowStore(open_blob_store(settings)).clear()
    console.print(f"Kafka-protocol broker: [bold]{bootstrap}[/]")
    database = resolve_database_url(settings)
    stack.callback(database.close)
    migrate(database.url)
    engine = make_engine(database.url, pool_size=8)  # the console serves from it at the end
    stack.callback(engine.dispose)
    factory = sessionmaker(engine)
    console.print(f"Postgres: [bold]{database.url.render_as_string(hide_password=True)}[/]")
    ensure_topics(bootstrap, settings)
    settings = settings.model_copy(
        update={"database_url": database.url.render_as_string(hide_password=False)}
    )
    return Services(settings, bootstrap, engine, factory, _db_now(factory))


def start_pipeline(
    stack: ExitStack, settings: Settings, services: Services, model_path: Path, logs: Path, console: Console
) -> dict[str, subprocess.Popen[bytes]]:
    """The joiner, a clip builder and the inference worker as child processes, stopped when the stack unwinds."""
    env = settings_env(settings.model_copy(update={"model": str(model_path)}))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stack.callback(lambda: stop_processes(list(procs.values())))
    for name in ("joiner", "builder", "worker"):
        procs[name] = start_command([name, "--bootstrap", services.bootstrap], env, logs / f"{name}.log")
    console.print(
        f"joiner (Faust) pid {procs['joiner'].pid}, clip builder pid {procs['builder'].pid}, "
        f"inference worker pid {procs['worker'].pid}; logs in {logs}"
    )
    return procs


def upload_fleet(
    progress: Progress, scenarios: list[Scenario], settings: Settings, bootstrap: str, seed: int
) -> list[SegmentMessage]:
    """Render every trip's camera segments, put them in the blob store and publish their claim checks."""
    blobs = open_blob_store(settings)
    uploads = settings.home.resolve() / "sim" / f"seed-{seed}"
    messages: list[SegmentMessage] = []
    task = progress.add_task("simulate dashcam uploads", total=len(scenarios))
    for s in scenarios:
        segments = write_segments(s, uploads / s.scenario_id, segment_s=DEMO_SEGMENT_S)
        messages.extend(to_messages(segments, blobs))
        progress.advance(task)
    producer = make_producer(bootstrap, settings)
    task = progress.add_task("publish segments to Kafka", total=len(messages))
    # Upload in device-clock order across vehicles, as a fleet's gateways would.
    for m in sorted(messages, key=lambda m: m.end_ts):
        publish(producer, [m], settings)
        progress.advance(task)
    producer.close()
    return messages


def wait_for_clips(
    progress: Progress,
    services: Services,
    expected: set[str],
    procs: dict[str, subprocess.Popen[bytes]],
    *,
    timeout_s: float,
    logs: Path,
) -> None:
    """Until every expected clip has its answer in Postgres; a dead process or the timeout ends it with the cause."""
    task = progress.add_task("clips written to Postgres", total=len(expected))
    deadline = time.monotonic() + timeout_s
    while True:
        done = _landed(services.factory, expected, services.since)
        progress.update(task, completed=len(done))
        if len(done) == len(expected):
            return
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise DemoTimeout(f"the {name} exited with code {proc.returncode}; see {logs / name}.log")
        if time.monotonic() > deadline:
            raise DemoTimeout(
                f"{len(done)}/{len(expected)} clips in Postgres after {timeout_s:.0f} s; see {logs}"
            )
        time.sleep(1.0)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def serve_demo_console(
    settings: Settings, engine: Engine, factory: sessionmaker[Session], *, fleet_id: str, console: Console
) -> None:
    """A safety manager for the demo fleet, with a fresh random password each run, and the console until Ctrl-C."""
    from streams.console.auth import add_manager
    from streams.console.server import serve

    username, password = DEMO_MANAGER, secrets.token_urlsafe(9)
    with factory() as session, session.begin():
        add_manager(
            session,
            username=username,
            fleet_id=fleet_id,
            password=password,
            display_name="Demo safety manager",
        )

    def ready(url: str) -> None:
        console.print(
            f"\n[bold green]Console:[/] [bold]{url}[/]   sign in as [bold]{username}[/] with password "
            f"[bold]{password}[/]\n(the review queue, clips and reports of fleet {fleet_id}; Ctrl-C stops "
            "the demo)"
        )

    serve(settings, engine, ready=ready, any_port_if_taken=True)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _db_now(factory: sessionmaker[Session]) -> datetime:
    with factory() as session:
        now = session.scalar(select(func.now()))
    assert now is not None
    return now


def _landed(factory: sessionmaker[Session], clip_ids: set[str], since: datetime) -> set[str]:
    """Clips with an inference written by this run (a rerun upserts the rows an earlier run left)."""
    with factory() as session:
        rows = session.scalars(
            select(Inference.clip_id).where(Inference.clip_id.in_(clip_ids), Inference.updated_at >= since)
        )
        return set(rows)


def _model_version(factory: sessionmaker[Session], clip_ids: set[str]) -> str:
    with factory() as session:
        latest = session.scalars(
            select(Inference.model_version)
            .where(Inference.clip_id.in_(clip_ids))
            .order_by(Inference.id.desc())
        ).first()
        return latest or "?"


def scenario_for(run: DemoRun, vehicle: str, start: float, end: float) -> Scenario | None:
    for s in run.scenarios:
        if s.vehicle_id == vehicle and s.start_ts < end and start < s.start_ts + s.duration:
            return s
    return None


def truth_for(run: DemoRun, vehicle: str, start: float, end: float) -> set[EventType]:
    s = scenario_for(run, vehicle, start, end)
    return {e.type for e in s.events} if s else set()


def simulate_reviews(factory: sessionmaker[Session], run: DemoRun) -> tuple[int, int]:
    """A simulated safety manager reviews every clip of the run against the simulator's truth, through the console's
    own review actions: accepts answers that name the right events, corrects the others (the labels `drivecoach
    retrain` learns from; the events then wait for coaching). Returns (accepted, corrected)."""
    from streams.console.review import EventIn, ReviewIn, apply_review

    accepted = corrected = 0
    with factory() as session, session.begin():
        rows = session.execute(
            select(Inference, Clip)
            .join(Clip, Inference.clip_id == Clip.clip_id)
            .where(Inference.clip_id.in_(run.expected), Inference.model_version == run.model_version)
        ).all()
        for inference, clip in rows:
            truth = scenario_for(run, clip.vehicle_id, clip.start_ts, clip.end_ts)
            if truth is None:
                continue
            said = {e.type for e in session.scalars(select(Event).where(Event.inference_id == inference.id))}
            right = inference.valid and said == {e.type.value for e in truth.events}
            duration = clip.end_ts - clip.start_ts
            review = (
                ReviewIn(action="accept")
                if right
                else ReviewIn(
                    action="correct",
                    instruction=truth.instruction,
                    events=[
                        EventIn(type=e.type, start=min(e.start, duration), end=min(e.end, duration))
                        for e in truth.events
                    ],
                )
            )
            apply_review(
                session.connection(),
                fleet_id=clip.fleet_id,
                reviewer="demo-safety-manager",
                inference_id=inference.id,
                clip_duration=duration,
                review=review,
            )
            accepted, corrected = accepted + right, corrected + (not right)
    return accepted, corrected


def _ratio(value: float) -> str:
    """A ratio for the table; '-' where it is undefined (no predictions, or no truth, of that type)."""
    return "-" if math.isnan(value) else f"{value:.2f}"


def print_report(console: Console, factory: sessionmaker[Session], run: DemoRun) -> EventScores:
    with factory() as session:
        clips = {c.clip_id: c for c in session.scalars(select(Clip).where(Clip.clip_id.in_(run.expected)))}
        inferences = list(
            session.scalars(
                select(Inference).where(
                    Inference.clip_id.in_(run.expected), Inference.model_version == run.model_version
                )
            )
        )
        inference_ids = [i.id for i in inferences]
        events = list(session.scalars(select(Event).where(Event.inference_id.in_(inference_ids))))
        instructions = {
            i.inference_id: i.text
            for i in session.scalars(select(Instruction).where(Instruction.inference_id.in_(inference_ids)))
        }
    by_inference: dict[int, set[EventType]] = {}
    for e in events:
        by_inference.setdefault(e.inference_id, set()).add(EventType(e.type))

    per_driver = Table(title="events per vehicle and driver")
    for col in ("vehicle", "driver", "clips", "events", "most frequent"):
        per_driver.add_column(col)
    rows: dict[tuple[str, str], list[int]] = {}
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    for inf in inferences:
        clip = clips[inf.clip_id]
        k = (clip.vehicle_id, clip.driver_id or "-")
        rows.setdefault(k, [0, 0])[0] += 1
        for t in by_inference.get(inf.id, set()):
            rows[k][1] += 1
            kinds.setdefault(k, {})[t.value] = kinds.setdefault(k, {}).get(t.value, 0) + 1
    for k in sorted(rows):
        top = sorted(kinds.get(k, {}).items(), key=lambda kv: -kv[1])[:2]
        per_driver.add_row(
            k[0], k[1], str(rows[k][0]), str(rows[k][1]), ", ".join(f"{t} ×{n}" for t, n in top) or "-"
        )
    console.print(per_driver)

    samples = Table(title="sample instructions (DEMO model)")
    samples.add_column("vehicle")
    samples.add_column("events")
    samples.add_column("instruction")
    for inf in inferences[:6]:
        samples.add_row(
            clips[inf.clip_id].vehicle_id,
            ", ".join(sorted(t.value for t in by_inference.get(inf.id, set()))) or "none",
            instructions.get(inf.id, ""),
        )
    console.print(samples)

    pairs = []
    for inf in inferences:
        c = clips[inf.clip_id]
        pairs.append((by_inference.get(inf.id, set()), truth_for(run, c.vehicle_id, c.start_ts, c.end_ts)))
    scores = score_events(pairs)
    table = Table(title="event detection vs simulator truth (scenarios the demo model never saw)")
    for col in ("event type", "TP", "FP", "FN", "precision", "recall"):
        table.add_column(col)
    for t, s in sorted(scores.per_type.items(), key=lambda kv: kv[0].value):
        table.add_row(t.value, str(s.tp), str(s.fp), str(s.fn), _ratio(s.precision), _ratio(s.recall))
    m = scores.micro
    table.add_row("[bold]all (micro)", str(m.tp), str(m.fp), str(m.fn), _ratio(m.precision), _ratio(m.recall))
    console.print(table)
    invalid = sum(not i.valid for i in inferences)
    console.print(
        f"segments published: {run.segments}; clips expected: {len(run.expected)}, in Postgres: {len(inferences)} "
        f"(invalid answers: {invalid}); exact event sets: {scores.exact_clips}/{scores.clips}; "
        f"model: {run.model_version}; wall time: {run.wall_s:.0f} s"
    )
    return scores


def print_telemetry_comparison(
    console: Console, factory: sessionmaker[Session], run: DemoRun, model_path: Path, settings: Settings
) -> dict[str, EventScores]:
    """The run's clips scored per event type three ways (issue 19): the stored answers (the model with each clip's
    motion summary), the telemetry rules stored beside them, and, for the DEMO model (a fraction of a second per
    clip here), the same model asked again with the video alone ("Vehicle motion: no telemetry.")."""
    with factory() as session:
        clips = list(session.scalars(select(Clip).where(Clip.clip_id.in_(run.expected))))
        answered = session.execute(
            select(Inference.clip_id, Event.type)
            .join(Event, Event.inference_id == Inference.id, isouter=True)
            .where(Inference.clip_id.in_(run.expected), Inference.model_version == run.model_version)
        ).all()
        ruled = session.execute(
            select(RuleEventRow.clip_id, RuleEventRow.type).where(RuleEventRow.clip_id.in_(run.expected))
        ).all()
    model: dict[str, set[EventType]] = {}
    for clip_id, event_type in answered:
        model.setdefault(clip_id, set()).update([EventType(event_type)] if event_type else [])
    rules: dict[str, set[EventType]] = {}
    for clip_id, event_type in ruled:
        rules.setdefault(clip_id, set()).add(EventType(event_type))
    clips = [c for c in clips if c.clip_id in model]
    truth = {c.clip_id: truth_for(run, c.vehicle_id, c.start_ts, c.end_ts) for c in clips}
    sources = {"model + telemetry": model, "telemetry rules": rules}
    if is_demo_model(model_path):
        engine = TransformersEngine(model_path, threads=1)
        blobs = open_blob_store(settings)
        with console.status(f"asking the DEMO model again with the video alone ({len(clips)} clips)"):
            sources["model, video only"] = {
                c.clip_id: answer_types(
                    engine.run_cot(load_frames_bytes(blobs.get_bytes(c.frames_uri))).turn1
                )
                or set()
                for c in clips
            }
    scores = {
        name: score_events([(answers.get(c.clip_id, set()), truth[c.clip_id]) for c in clips])
        for name, answers in sources.items()
    }
    table = Table(title="with and without telemetry: precision / recall per event type (simulator truth)")
    table.add_column("event type")
    for name in scores:
        table.add_column(name)
    for t in sorted({t for s in scores.values() for t in s.per_type}, key=lambda t: t.value):
        table.add_row(t.value, *(_pr(s.per_type.get(t)) for s in scores.values()))
    table.add_row("[bold]all (micro)", *(_pr(s.micro) for s in scores.values()))
    table.add_row("exact event sets", *(f"{s.exact_clips}/{s.clips}" for s in scores.values()))
    console.print(table)
    console.print(
        "the rules report harsh braking, acceleration and turning and speeding only; the simulator labels a late "
        "brake as a forward collision risk, so the rules' harsh braking there counts as a false positive"
    )
    return scores


def _pr(score: TypeScore | None) -> str:
    return "-" if score is None else f"{_ratio(score.precision)} / {_ratio(score.recall)}"
