"""The scheduled retraining job: export reviewed data -> fine-tune -> evaluate -> promote, never two at once.

    python -m training.retrain --database-url URL --work DIR [--min-new-reviews 50] [--metric bertscore_f1]
        [--margin 0.0] [--nproc 1] [--launcher torchrun|deepspeed] [--hostfile FILE] [fine-tuning options]

(`drivecoach retrain` runs this.) Steps, each logged and recorded in `training_runs`:
1. take a Postgres advisory lock (another run holding it: log it and exit 0, nothing recorded);
2. skip (status `skipped`) unless at least `--min-new-reviews` labels arrived since the last run's cut-off;
3. export the reviewed data (`training.export`), split by vehicle;
4. fine-tune the production model on the train split (`training.finetune`, launched with torchrun or deepspeed on
   `--nproc` processes per node, `--hostfile` for many nodes; CPU runs use DS_ACCELERATOR=cpu);
5. evaluate the production model and the candidate on the eval split (`training.evaluate`);
6. register the candidate; promote it when it beats production by `--margin` on `--metric`, else mark it rejected
   with the reason. Exit 0 when the job did its work (promoted, rejected or skipped), 1 when it failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import Review, TrainingRun
from schemas.generation import TransformersEngine, is_demo_model, model_version_of
from schemas.registry import production, promote, register, reject
from training.evaluate import EvalScores, evaluate
from training.export import LABEL_VERDICTS, export_dataset
from training.finetune import Recipe
from training.sft import load_records

log = logging.getLogger("training.retrain")
LOCK_KEY = 0x64726976  # "driv": one retraining job at a time per database
HIGHER_IS_BETTER = {
    "bertscore_f1",
    "bleu",
    "event_precision",
    "event_recall",
    "exact_event_sets",
    "valid_share",
}


class RetrainError(RuntimeError):
    """A step of the job failed; the run is recorded as failed with this message."""


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


def launch_command(args: argparse.Namespace, data: Path, base: str, out: Path) -> list[str]:
    recipe = [f"--{f.name.replace('_', '-')}={getattr(args, f.name)}" for f in fields(Recipe)]
    module = ["-m", "training.finetune", "--data", str(data), "--model", base, "--out", str(out), *recipe]
    if args.launcher == "deepspeed":
        hosts = ["--hostfile", str(args.hostfile)] if args.hostfile else []
        beside = Path(sys.executable).with_name("deepspeed")  # the launcher of this environment, PATH or not
        launcher = str(beside) if beside.exists() else "deepspeed"
        return [launcher, *hosts, "--num_gpus", str(args.nproc), "--module", "training.finetune", *module[2:]]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc), *module]


def score(model_path: str, data: Path, max_new_tokens: int, bertscore_model: str) -> EvalScores:
    records = load_records(data, index="eval.json")
    engine = TransformersEngine(model_path, max_new_tokens=max_new_tokens)
    frames = []
    for r in records:
        with np.load(r.frames) as d:
            frames.append(d["frames"])
    outputs = engine.run_batch(frames)
    return evaluate(
        [(o.turn1, o.turn2) for o in outputs],
        [(r.turn1, r.turn2) for r in records],
        bertscore_model=bertscore_model,
    )


def run(args: argparse.Namespace) -> int:
    engine = create_engine(args.database_url)
    factory = sessionmaker(engine)
    try:
        with engine.connect() as lock:
            if not lock.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}):
                log.info("another retraining run holds the lock; nothing to do")
                return 0
            try:
                return _locked(args, factory)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    finally:
        engine.dispose()


def _locked(args: argparse.Namespace, factory: sessionmaker[Session]) -> int:
    current = production(factory)
    if current is None:
        log.error("no model is in production: deploy one first (drivecoach model promote)")
        return 1
    with factory() as session:
        since = last_cutoff(session)
        fresh = new_labels_since(session, since)
    with factory() as session, session.begin():
        row = TrainingRun(base_model=current.version, status="running", manifest={"new_labels": fresh})
        session.add(row)
        session.flush()
        run_id = row.id
    if fresh < args.min_new_reviews:
        log.info("%d new labels since %s (< %d): skipped", fresh, since, args.min_new_reviews)
        _finish(factory, run_id, status="skipped")
        return 0
    work = args.work / f"run-{run_id}"
    try:
        log.info("run %d: base %s, %d new labels; exporting", run_id, current.version, fresh)
        manifest = export_dataset(factory, work / "data", eval_fraction=args.eval_fraction, seed=args.seed)
        _update(factory, run_id, manifest={**asdict(manifest), "new_labels": fresh})
        if not manifest.counts.get("train") or not manifest.counts.get("eval"):
            raise RetrainError(f"need examples in both splits, got {manifest.counts}")
        out = work / f"model-run-{run_id}"
        command = launch_command(args, work / "data", current.path, out)
        log.info("run %d: fine-tuning: %s", run_id, " ".join(command))
        env = dict(os.environ)
        if not _cuda():
            env.setdefault("DS_ACCELERATOR", "cpu")
        started = time.monotonic()
        with open(work / "finetune.log", "wb") as out_log:
            done = subprocess.run(command, env=env, stdout=out_log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RetrainError(f"fine-tuning exited with {done.returncode}; see {work / 'finetune.log'}")
        log.info(
            "run %d: fine-tuned in %.0f s; evaluating on %d eval clips",
            run_id,
            time.monotonic() - started,
            manifest.counts["eval"],
        )
        base_scores = score(current.path, work / "data", args.max_new_tokens, args.bertscore_model)
        new_scores = score(str(out), work / "data", args.max_new_tokens, args.bertscore_model)
        version = model_version_of(out)
        before, after = getattr(base_scores, args.metric), getattr(new_scores, args.metric)
        better = (
            after > before + args.margin if args.metric in HIGHER_IS_BETTER else after < before - args.margin
        )
        metrics = {
            "metric": args.metric,
            "margin": args.margin,
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
        if better:
            promote(factory, version)
            log.info(
                "run %d: %s %s %.4f -> %.4f: %s promoted",
                run_id,
                args.metric,
                "beats",
                before,
                after,
                version,
            )
            _finish(factory, run_id, status="succeeded", model_version=version, metrics=metrics)
        else:
            reason = f"{args.metric} {after:.4f} does not beat production's {before:.4f} by {args.margin}"
            reject(factory, version, reason)
            log.info("run %d: %s: rejected", run_id, reason)
            _finish(
                factory,
                run_id,
                status="rejected",
                model_version=version,
                metrics={**metrics, "reason": reason},
            )
        return 0
    except Exception as err:
        log.exception("run %d failed", run_id)
        _finish(factory, run_id, status="failed", metrics={"error": str(err)})
        return 1


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=os.environ.get("DRIVECOACH_DATABASE_URL", ""))
    p.add_argument("--work", type=Path, default=Path(".drivecoach/retrain"))
    p.add_argument("--min-new-reviews", type=int, default=50)
    p.add_argument("--metric", default="bertscore_f1", choices=sorted(HIGHER_IS_BETTER))
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--eval-fraction", type=float, default=0.2)
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per node")
    p.add_argument("--launcher", choices=("torchrun", "deepspeed"), default="torchrun")
    p.add_argument("--hostfile", type=Path, default=None, help="DeepSpeed hostfile for a multi-node run")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--bertscore-model", default="minilm", choices=("minilm", "roberta-large"))
    for f in fields(Recipe):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.database_url:
        log.error("set --database-url or DRIVECOACH_DATABASE_URL")
        sys.exit(2)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
