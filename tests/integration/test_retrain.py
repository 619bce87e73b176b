"""The retraining job end to end on CPU: reviewed simulated data -> ZeRO-2 with 2 processes on a tiny model ->
better than the production model on the held-out vehicles -> promoted -> the inference worker serves the new version.
Then: nothing new reviewed -> skipped; another run holding the lock -> this one does nothing. The job connects as
its own least-privilege login (migration 0012), as deployed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import sessionmaker

from schemas.db import Inference, ModelVersion, Review, TrainingRun
from schemas.generation import TransformersEngine
from schemas.messages import ClipMessage, InferenceResult
from schemas.prompts import PROMPT_VERSION
from schemas.registry import deploy, production
from streams.demo import scenario_frames
from streams.inference.engines.base import model_version_of
from streams.inference.sink import write_result
from streams.inference.worker import InferenceWorker
from streams.infra.roles import TRAINING_GROUP
from streams.infra.topics import ensure_topics
from streams.producer import make_producer
from streams.settings import Settings
from streams.simulate import make_scenarios
from tests.integration.harness import service_login
from training.retrain import LOCK_KEY
from training.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration
import deepspeed  # noqa: E402, F401 - `make test` installs the train extra: a missing or broken one must fail


@pytest.fixture
def trainer_url(database_url: str) -> Iterator[str]:
    with service_login(database_url, TRAINING_GROUP) as url:
        yield url


def _retrain(database_url: str, work: Path, log: Path, *extra: str) -> int:
    cmd = [
        sys.executable,
        "-m",
        "training.retrain",
        "--database-url",
        database_url,
        "--work",
        str(work),
        "--min-new-reviews",
        "10",
        "--metric",
        "bleu",
        "--margin",
        "1.0",
        "--eval-fraction",
        "0.25",
        "--nproc",
        "2",
        "--max-steps",
        "80",
        "--lr",
        "2e-3",
        "--warmup-ratio",
        "0.05",
        "--save-steps",
        "1000",
        "--max-new-tokens",
        "80",
        *extra,
    ]
    with open(log, "ab") as f:
        return subprocess.run(
            cmd,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        ).returncode


def test_reviewed_data_retrains_promotes_and_is_served(
    broker, database_url: str, trainer_url: str, tmp_path: Path
) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path / "home", max_pixels=4704)
    scenarios = make_scenarios(2024, 40, fleet_id=f"fleet-{uuid.uuid4().hex[:4]}", vehicles=8, duration=10.0)
    base = build_tiny_model(
        tmp_path / "base", corpus=[t for s in scenarios for t in (s.truth_turn1, s.instruction)], seed=0
    )
    deploy(factory, version=model_version_of(base), path=str(base), demo=True)
    for (
        s
    ) in scenarios:  # the worker answered; a safety manager reviewed and accepted or corrected each answer
        frames = scenario_frames(s, settings)
        path = tmp_path / "frames" / f"{s.scenario_id}.npz"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(frames.to_npz())
        t, h, w, _ = frames.frames.shape
        clip = ClipMessage(
            clip_id=f"{s.scenario_id}-{uuid.uuid4().hex[:6]}",
            fleet_id=s.fleet_id,
            vehicle_id=s.vehicle_id,
            driver_id=s.driver_id,
            start_ts=s.start_ts,
            end_ts=s.start_ts + s.duration,
            views=["road", "driver"],
            segments=[],
            frames_uri=path.as_uri(),
            num_frames=t,
            frame_width=w,
            frame_height=h,
            sample_fps=2.0,
        )
        inference_id = write_result(
            factory,
            clip=clip,
            result=InferenceResult(
                clip_id=clip.clip_id,
                model_version=model_version_of(base),
                prompt_version=PROMPT_VERSION,
                events=[],
                description="",
                instruction="Drive on.",
                raw_turn1='{"events":[],"description":"Normal driving: no safety events."}',
                raw_turn2="Drive on.",
                valid=True,
                latency_ms=1.0,
                prompt_tokens=1,
                generated_tokens=1,
            ),
        )
        with factory() as session, session.begin():
            session.add(
                Review(
                    fleet_id=s.fleet_id,
                    inference_id=inference_id,
                    reviewer="manager",
                    verdict="corrected",
                    corrected_turn1=s.truth_turn1,
                    corrected_instruction=s.instruction,
                )
            )

    work, log = tmp_path / "work", tmp_path / "retrain.log"
    assert _retrain(trainer_url, work, log) == 0, log.read_text()[-4000:]
    with factory() as session:
        run = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).first()
        assert run.status == "succeeded", (run.status, run.metrics, log.read_text()[-3000:])
        assert run.manifest["counts"]["train"] > 0 and run.manifest["counts"]["eval"] > 0
        assert not set(run.manifest["vehicles"]["train"]) & set(run.manifest["vehicles"]["eval"])
        assert run.metrics["candidate"]["bleu"] > run.metrics["base"]["bleu"] + 1.0
        new = session.get(ModelVersion, run.model_version)
        assert (
            new.stage == "production" and new.metrics["candidate"]["bleu"] == run.metrics["candidate"]["bleu"]
        )
    assert production(factory).version == run.model_version != model_version_of(base)
    listing = subprocess.run(
        [sys.executable, "-m", "streams.cli", "model", "list"],
        env=dict(os.environ, DRIVECOACH_DATABASE_URL=database_url, COLUMNS="400"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    judged = f"bleu {run.metrics['base']['bleu']:.3f} -> {run.metrics['candidate']['bleu']:.3f}"
    assert any(run.model_version in line and judged in line for line in listing.splitlines()), listing

    # The worker follows the registry: it now serves the new version.
    wsettings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:6]}.",
        database_url=database_url,
        one_record_per_batch=True,
        max_new_tokens=40,
        max_pixels=4704,
    )
    ensure_topics(broker.bootstrap, wsettings)
    current = production(factory)
    worker = InferenceWorker(
        wsettings,
        broker.bootstrap,
        lambda p: TransformersEngine(p, max_new_tokens=40),
        factory,
        model_path=current.path,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        s = scenarios[0]
        frames_uri = (tmp_path / "frames" / f"{s.scenario_id}.npz").as_uri()
        clip = ClipMessage(
            clip_id=f"served-{uuid.uuid4().hex[:6]}",
            fleet_id=s.fleet_id,
            vehicle_id=s.vehicle_id,
            start_ts=s.start_ts,
            end_ts=s.start_ts + 10,
            views=["road", "driver"],
            segments=[],
            frames_uri=frames_uri,
            num_frames=20,
            frame_width=84,
            frame_height=56,
            sample_fps=2.0,
        )
        producer = make_producer(broker.bootstrap, wsettings)
        producer.send(wsettings.topic("clips"), key=b"v", value=clip.model_dump_json().encode()).get(10)
        producer.close()
        deadline = time.monotonic() + 120
        served = None
        while served is None and time.monotonic() < deadline:
            with factory() as session:
                served = session.scalar(
                    select(Inference.model_version).where(Inference.clip_id == clip.clip_id)
                )
            time.sleep(0.5)
        assert served == run.model_version
    finally:
        worker.stop()
        thread.join(60)

    # Nothing new reviewed since the cut-off: skipped.
    assert _retrain(trainer_url, work, log) == 0
    with factory() as session:
        assert (
            session.scalars(select(TrainingRun.status).order_by(TrainingRun.id.desc())).first() == "skipped"
        )
        runs = session.scalar(select(TrainingRun.id).order_by(TrainingRun.id.desc()))
    # Another run holds the lock: this one records nothing and exits cleanly.
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        assert _retrain(trainer_url, work, log) == 0
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    with factory() as session:
        assert session.scalar(select(TrainingRun.id).order_by(TrainingRun.id.desc())) == runs
    assert "another retraining run holds the lock" in log.read_text()
    assert np.isfinite(run.metrics["candidate"]["bertscore_f1"])
    assert 0.0 <= run.metrics["candidate"]["event_f1"] <= 1.0
    # Judged on BLEU (a corpus score): no per-clip bootstrap; the per-clip event counts are kept for one.
    assert run.metrics["confidence"] is None
    assert len(run.metrics["candidate"]["clip_counts"]) == run.manifest["counts"]["eval"]
    assert "production -> candidate" in log.read_text()  # the per-type before/after the run logs
    engine.dispose()


def test_a_failing_step_is_recorded_and_exits_non_zero(
    database_url: str, trainer_url: str, tmp_path: Path
) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    deploy(factory, version=f"gone-{uuid.uuid4().hex[:6]}", path=str(tmp_path / "no-such-model"), demo=True)
    for k, s in enumerate(make_scenarios(2025, 4, fleet_id="fleet-fail", vehicles=4, duration=10.0)):
        frames = tmp_path / f"{k}.npz"
        frames.write_bytes(scenario_frames(s, Settings(max_pixels=4704)).to_npz())
        clip = ClipMessage(
            clip_id=f"fail-{uuid.uuid4().hex[:8]}",
            fleet_id=s.fleet_id,
            vehicle_id=s.vehicle_id,
            start_ts=s.start_ts,
            end_ts=s.start_ts + 10,
            views=["road", "driver"],
            segments=[],
            frames_uri=frames.as_uri(),
            num_frames=20,
            frame_width=84,
            frame_height=56,
            sample_fps=2.0,
        )
        inference_id = write_result(
            factory,
            clip=clip,
            result=InferenceResult(
                clip_id=clip.clip_id,
                model_version="m-fail",
                prompt_version=PROMPT_VERSION,
                events=[],
                description="",
                instruction="ok",
                raw_turn1=s.truth_turn1,
                raw_turn2=s.instruction,
                valid=True,
                latency_ms=1.0,
                prompt_tokens=1,
                generated_tokens=1,
            ),
        )
        with factory() as session, session.begin():
            session.add(
                Review(fleet_id=s.fleet_id, inference_id=inference_id, reviewer="m", verdict="accepted")
            )
    log = tmp_path / "retrain.log"
    assert (
        _retrain(trainer_url, tmp_path / "work", log, "--min-new-reviews", "1", "--eval-fraction", "0.5") == 1
    )
    with factory() as session:
        run = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).first()
    assert (
        run.status == "failed"
        and "fine-tuning exited" in run.metrics["error"]
        and run.finished_at is not None
    )
    engine.dispose()
