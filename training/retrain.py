"""The scheduled retraining job: export reviewed data -> fine-tune -> evaluate -> promote, never two at once.

    python -m training.retrain [--database-url URL] --work DIR [--min-new-reviews 50] [--metric bertscore_f1]
        [--margin 0.0] [--min-confidence 0.9] [--nproc 1] [--launcher torchrun|deepspeed] [--hostfile FILE] [fine-tuning options]

(`drivecoach retrain` runs this; the URL defaults to DRIVECOACH_DATABASE_URL.) Steps, each logged and recorded
in `training_runs`:
1. take a Postgres advisory lock (another run holding it: log it and exit 0, nothing recorded);
2. skip (status `skipped`) unless at least `--min-new-reviews` labels arrived since the last run's cut-off;
3. export the reviewed data (`training.export`), split by vehicle;
4. fine-tune the production model on the train split (`training.finetune`, launched with torchrun or deepspeed
   on `--nproc` processes per node, `--hostfile` for many nodes; CPU runs use DS_ACCELERATOR=cpu);
5. evaluate the production model and the candidate on the eval split (`training.evaluate`);
6. register the candidate; promote it when it beats production by `--margin` on `--metric` and, for
   `event_f1`, in at least `--min-confidence` of paired bootstrap resamples of the held-out clips (one clip's
   luck is not a better model), else mark it rejected with the reason. Exit 0 when the job did its work (promoted, rejected or skipped), 1 when it
   failed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import typer
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import ModelVersion, Review, TrainingRun
from schemas.generation import TransformersEngine, is_demo_model, model_version_of
from schemas.registry import production, promote, register, reject
from training.evaluate import EvalScores, evaluate
from training.export import LABEL_VERDICTS, ExportManifest, export_dataset
from training.finetune import Recipe
from training.options import (
    CutoffLen,
    DatabaseUrl,
    Epochs,
    EvalFraction,
    GradAccum,
    Lr,
    MaxSteps,
    SaveSteps,
    Scheduler,
    WarmupRatio,
    build_settings,
    command_app,
    configure_logging,
)
from training.sft import load_records
from training.significance import RESAMPLES, win_rate

if TYPE_CHECKING:
    from training.settings import TrainingSettings

log = logging.getLogger("training.retrain")
LOCK_KEY = 0x64726976  # "driv": one retraining job at a time per database
HIGHER_IS_BETTER = {
    "event_f1",
    "bertscore_f1",
    "bleu",
    "event_precision",
    "event_recall",
    "exact_event_sets",
    "valid_share",
}
# The metrics a run can be judged on (`--metric`): today all of them are higher-is-better.
Metric = Literal[
    "event_f1", "bertscore_f1", "bleu", "event_precision", "event_recall", "exact_event_sets", "valid_share"
]


class RetrainError(RuntimeError):
    """A step of the job failed; the run is recorded as failed with this message."""


@dataclass(frozen=True)
class RetrainJob:
    """One run's knobs (the command's flags); where the database is comes from TrainingSettings."""

    work: Path = Path(".drivecoach/retrain")
    min_new_reviews: int = 50
    metric: Metric = "event_f1"  # the events are what a safety manager acts on; the instruction follows them
    margin: float = 0.0
    # With --metric event_f1: the share of paired resamples of the held-out clips in which the candidate must beat
    # production (training.significance); 0 turns the check off. At 0.9 one clip better is not enough, three are.
    min_confidence: float = 0.9
    eval_fraction: float = 0.2
    nproc: int = 1  # processes (GPUs) per node
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    hostfile: Path | None = None  # DeepSpeed hostfile for a multi-node run
    max_new_tokens: int = 160
    bertscore_model: Literal["minilm", "roberta-large"] = "minilm"
    recipe: Recipe = field(default_factory=Recipe)  # recipe.seed also seeds the vehicle split


def new_labels_since(session: Session, since: datetime | None) -> int:
    query = select(func.count()).select_from(Review).where(Review.verdict.in_(LABEL_VERDICTS))
    if since is not None:
        query = query.where(Review.created_at > since)
    return int(session.scalar(query) or 0)


def last_cutoff(session: Session) -> datetime | None:
    runs = session.scalars(
        select(TrainingRun)
        .where(TrainingRun.status.in_(("succeeded", "rejected")))
        .order_by(TrainingRun.id.desc())
        .limit(1)
    ).first()
    cutoff = runs.manifest.get("cutoff") if runs else None
    return datetime.fromisoformat(cutoff) if cutoff else None


def launch_command(job: RetrainJob, data: Path, base: str, out: Path) -> list[str]:
    recipe = [f"--{name.replace('_', '-')}={value}" for name, value in asdict(job.recipe).items()]
    module = ["-m", "training.finetune", "--data", str(data), "--model", base, "--out", str(out), *recipe]
    if job.launcher == "deepspeed":
        hosts = ["--hostfile", str(job.hostfile)] if job.hostfile else []
        beside = Path(sys.executable).with_name("deepspeed")  # the launcher of this environment, PATH or not
        launcher = str(beside) if beside.exists() else "deepspeed"
        return [launcher, *hosts, "--num_gpus", str(job.nproc), "--module", "training.finetune", *module[2:]]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(job.nproc), *module]


def score(model_path: str, data: Path, max_new_tokens: int, bertscore_model: str) -> EvalScores:
    records = load_records(data, index="eval.json")
    engine = TransformersEngine(model_path, max_new_tokens=max_new_tokens)
    frames = []
    for r in records:
        with np.load(r.frames) as d:
            frames.append(d["frames"])
    outputs = engine.run_batch(frames, [r.telemetry for r in records])  # in the prompt version it learned
    return evaluate(
        [(o.turn1, o.turn2) for o in outputs],
        [(r.turn1, r.turn2) for r in records],
        bertscore_model=bertscore_model,
    )


def run(settings: TrainingSettings, job: RetrainJob) -> int:
    """Take the lock and do one run; another run holding it: exit 0, nothing recorded."""
    engine = create_engine(settings.database_url)
    factory = sessionmaker(engine)
    try:
        with engine.connect() as lock:
            if not lock.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}):
                log.info("another retraining run holds the lock; nothing to do")
                return 0
            try:
                return run_under_lock(job, factory, s3_endpoint=settings.s3_endpoint_url)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    finally:
        engine.dispose()


def run_under_lock(job: RetrainJob, factory: sessionmaker[Session], *, s3_endpoint: str = "") -> int:
    """The whole run, under the lock: record it, then skip it or export -> fine-tune -> evaluate -> decide.

    0 when the job did its work (promoted, rejected or skipped), 1 when it failed (recorded as failed)."""
    current = production(factory)
    if current is None:
        log.error("no model is in production: deploy one first (drivecoach model promote)")
        return 1
    run_id, fresh, since = open_run(factory, current)
    if fresh < job.min_new_reviews:
        log.info("%d new labels since %s (< %d): skipped", fresh, since, job.min_new_reviews)
        _finish(factory, run_id, status="skipped")
        return 0
    work = job.work / f"run-{run_id}"
    try:
        log.info("run %d: base %s, %d new labels; exporting", run_id, current.version, fresh)
        manifest = export_step(factory, job, run_id, work / "data", new_labels=fresh, s3_endpoint=s3_endpoint)
        started = time.monotonic()
        out = fine_tune_step(job, run_id, work, current.path)
        log.info(
            "run %d: fine-tuned in %.0f s; evaluating on %d eval clips",
            run_id,
            time.monotonic() - started,
            manifest.counts["eval"],
        )
        base_scores = score(current.path, work / "data", job.max_new_tokens, job.bertscore_model)
        new_scores = score(str(out), work / "data", job.max_new_tokens, job.bertscore_model)
        decide_step(factory, job, run_id, current, out, base_scores, new_scores)
        return 0
    except Exception as err:
        log.exception("run %d failed", run_id)
        _finish(factory, run_id, status="failed", metrics={"error": str(err)})
        return 1


def open_run(factory: sessionmaker[Session], current: ModelVersion) -> tuple[int, int, datetime | None]:
    """Count the labels since the last run's cut-off and record a `running` run: (id, new labels, since)."""
    with factory() as session:
        since = last_cutoff(session)
        fresh = new_labels_since(session, since)
    with factory() as session, session.begin():
        row = TrainingRun(base_model=current.version, status="running", manifest={"new_labels": fresh})
        session.add(row)
        session.flush()
        return row.id, fresh, since


def export_step(
    factory: sessionmaker[Session],
    job: RetrainJob,
    run_id: int,
    data: Path,
    *,
    new_labels: int,
    s3_endpoint: str = "",
) -> ExportManifest:
    """The reviewed data, split by vehicle, into `data`; its manifest recorded with the run."""
    manifest = export_dataset(
        factory, data, eval_fraction=job.eval_fraction, seed=job.recipe.seed, s3_endpoint=s3_endpoint
    )
    _update(factory, run_id, manifest={**asdict(manifest), "new_labels": new_labels})
    if not manifest.counts.get("train") or not manifest.counts.get("eval"):
        raise RetrainError(f"need examples in both splits, got {manifest.counts}")
    return manifest


def fine_tune_step(job: RetrainJob, run_id: int, work: Path, base: str) -> Path:
    """`training.finetune` under the job's launcher (its output in `work/finetune.log`): the candidate."""
    out = work / f"model-run-{run_id}"
    command = launch_command(job, work / "data", base, out)
    log.info("run %d: fine-tuning: %s", run_id, " ".join(command))
    env = dict(os.environ)
    if not _cuda():
        env.setdefault("DS_ACCELERATOR", "cpu")
    with open(work / "finetune.log", "wb") as out_log:
        done = subprocess.run(command, env=env, stdout=out_log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RetrainError(f"fine-tuning exited with {done.returncode}; see {work / 'finetune.log'}")
    return out


@dataclass(frozen=True)
class Verdict:
    promote: bool
    before: float
    after: float
    confidence: float | None  # the paired bootstrap's win rate; None when the metric has no per-clip counts
    reason: str  # why a rejected candidate was rejected ("" when promoted)


def judge(job: RetrainJob, base: EvalScores, candidate: EvalScores) -> Verdict:
    """Better by the margin on the metric and, for event_f1, in enough resamples of the held-out clips."""
    before, after = getattr(base, job.metric), getattr(candidate, job.metric)
    better = after > before + job.margin if job.metric in HIGHER_IS_BETTER else after < before - job.margin
    confidence = None
    if job.metric == "event_f1" and base.clip_counts:  # both asked about the same clips
        confidence = win_rate(base.clip_counts, candidate.clip_counts, seed=job.recipe.seed)
    if not better:
        reason = f"{job.metric} {after:.4f} does not beat production's {before:.4f} by {job.margin}"
    elif confidence is not None and confidence < job.min_confidence:
        reason = (
            f"{job.metric} {before:.4f} -> {after:.4f} is better in only {confidence:.0%} of {RESAMPLES} resamples "
            f"of the {len(base.clip_counts)} held-out clips (--min-confidence {job.min_confidence:.0%})"
        )
    else:
        reason = ""
    return Verdict(promote=not reason, before=before, after=after, confidence=confidence, reason=reason)


def decide_step(
    factory: sessionmaker[Session],
    job: RetrainJob,
    run_id: int,
    current: ModelVersion,
    out: Path,
    base_scores: EvalScores,
    new_scores: EvalScores,
) -> None:
    """Register the candidate; promote it when `judge` says so, else reject it (why)."""
    version = model_version_of(out)
    verdict = judge(job, base_scores, new_scores)
    metrics = {
        "metric": job.metric,
        "margin": job.margin,
        "min_confidence": job.min_confidence,
        "confidence": verdict.confidence,
        "base": base_scores.as_dict(),
        "candidate": new_scores.as_dict(),
    }
    register(
        factory,
        version=version,
        path=str(out.resolve()),
        demo=is_demo_model(current.path),
        metrics=metrics,
    )
    for line in before_after(base_scores, new_scores):
        log.info("run %d: %s", run_id, line)
    if verdict.confidence is not None:
        log.info(
            "run %d: the candidate is better in %.0f%% of %d paired resamples of the %d held-out clips",
            run_id,
            100 * verdict.confidence,
            RESAMPLES,
            len(base_scores.clip_counts),
        )
    if verdict.promote:
        promote(factory, version)
        log.info(
            "run %d: %s beats %.4f -> %.4f: %s promoted",
            run_id,
            job.metric,
            verdict.before,
            verdict.after,
            version,
        )
        _finish(factory, run_id, status="succeeded", model_version=version, metrics=metrics)
    else:
        reject(factory, version, verdict.reason)
        log.info("run %d: %s: rejected", run_id, verdict.reason)
        _finish(
            factory,
            run_id,
            status="rejected",
            model_version=version,
            metrics={**metrics, "reason": verdict.reason},
        )


def before_after(base: EvalScores, candidate: EvalScores) -> list[str]:
    """Per event type on the held-out vehicles, production's F1 (precision / recall) against the candidate's, then
    the micro average: the lines the run logs beside its decision."""

    def cell(scores: dict[str, float | None] | None) -> str:
        if not scores:
            return "-"
        f1, p, r = (
            "-" if (x := scores.get(k)) is None else f"{x:.2f}" for k in ("f1", "precision", "recall")
        )
        return f"F1 {f1} (P {p} R {r})"

    types = sorted(set(base.per_type) | set(candidate.per_type))
    width = max((len(t) for t in types), default=0)
    lines = [f"{'event type':<{width}}  production -> candidate"]
    lines += [
        f"{t:<{width}}  {cell(base.per_type.get(t))} -> {cell(candidate.per_type.get(t))}" for t in types
    ]
    lines.append(f"{'all (micro)':<{width}}  F1 {base.event_f1:.3f} -> {candidate.event_f1:.3f}")
    return lines


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _update(factory: sessionmaker[Session], run_id: int, **values: object) -> None:
    with factory() as session, session.begin():
        row = session.get(TrainingRun, run_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)


def _finish(factory: sessionmaker[Session], run_id: int, *, status: str, **values: object) -> None:
    _update(factory, run_id, status=status, finished_at=datetime.now(UTC), **values)


JOB = RetrainJob()
RECIPE = JOB.recipe
app = command_app(__doc__.split("\n\n")[0])


@app.command()
def retrain_command(
    database_url: DatabaseUrl = None,
    work: Annotated[Path, typer.Option(help="each run works in WORK/run-ID")] = JOB.work,
    min_new_reviews: Annotated[
        int, typer.Option(min=0, help="labels since the last run's cut-off needed to run (else skipped)")
    ] = JOB.min_new_reviews,
    metric: Annotated[Metric, typer.Option(help="what the candidate must beat production on")] = JOB.metric,
    margin: Annotated[float, typer.Option(help="by how much it must beat production")] = JOB.margin,
    min_confidence: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="event_f1 only: the share of paired resamples of the held-out clips the candidate must win (0: off)",
        ),
    ] = JOB.min_confidence,
    eval_fraction: EvalFraction = JOB.eval_fraction,
    nproc: Annotated[int, typer.Option(min=1, help="processes (GPUs) per node")] = JOB.nproc,
    launcher: Annotated[
        Literal["torchrun", "deepspeed"], typer.Option(help="what starts the fine-tuning processes")
    ] = JOB.launcher,
    hostfile: Annotated[
        Path | None, typer.Option(help="DeepSpeed hostfile for a multi-node run")
    ] = JOB.hostfile,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="generation length when evaluating")
    ] = JOB.max_new_tokens,
    bertscore_model: Annotated[
        Literal["minilm", "roberta-large"], typer.Option(help="BERTScore model (minilm needs no download)")
    ] = JOB.bertscore_model,
    lr: Lr = RECIPE.lr,
    epochs: Epochs = RECIPE.epochs,
    warmup_ratio: WarmupRatio = RECIPE.warmup_ratio,
    scheduler: Scheduler = RECIPE.scheduler,
    cutoff_len: CutoffLen = RECIPE.cutoff_len,
    grad_accum: GradAccum = RECIPE.grad_accum,
    save_steps: SaveSteps = RECIPE.save_steps,
    seed: Annotated[int, typer.Option(help="seed of the vehicle split and of fine-tuning")] = RECIPE.seed,
    max_steps: MaxSteps = RECIPE.max_steps,
) -> None:
    """One retraining run: export -> fine-tune -> evaluate -> promote or reject (exit 0), failed: exit 1."""
    configure_logging()
    settings = build_settings(need_database=True, database_url=database_url)
    recipe = Recipe(
        lr=lr,
        epochs=epochs,
        warmup_ratio=warmup_ratio,
        scheduler=scheduler,
        cutoff_len=cutoff_len,
        grad_accum=grad_accum,
        save_steps=save_steps,
        seed=seed,
        max_steps=max_steps,
    )
    job = RetrainJob(
        work=work,
        min_new_reviews=min_new_reviews,
        metric=metric,
        margin=margin,
        min_confidence=min_confidence,
        eval_fraction=eval_fraction,
        nproc=nproc,
        launcher=launcher,
        hostfile=hostfile,
        max_new_tokens=max_new_tokens,
        bertscore_model=bertscore_model,
        recipe=recipe,
    )
    raise typer.Exit(run(settings, job))


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="python -m training.retrain")


if __name__ == "__main__":
    main()
