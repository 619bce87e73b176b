"""The inference worker on the real broker, real Postgres and a real engine: batches land once, a replay of the
`clips` topic changes nothing, engine failures restart the engine and dead-letter only the clip that keeps failing,
a Postgres outage loses nothing, and a promotion switches the served model between batches."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Self

import numpy as np
import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import sessionmaker

from schemas.db import Inference, Instruction
from schemas.generation import TransformersEngine
from schemas.messages import ClipMessage
from schemas.registry import deploy
from streams.demo import scenario_clip, scenario_frames
from streams.inference.engines.base import CotOutput, Engine, model_version_of
from streams.inference.worker import InferenceWorker, committed_offsets, inference_group
from streams.infra.blobs import LocalBlobStore
from streams.infra.topics import ensure_topics
from streams.producer import make_producer
from streams.settings import Settings
from streams.simulate import make_scenarios
from tests.integration.harness import read_topic, wait_until

pytestmark = pytest.mark.integration
APP = "drivecoach-worker-under-test"


@pytest.fixture
def setup(
    broker, database_url: str, trained_tiny_model: Path, tmp_path: Path
) -> Iterator[tuple[Settings, sessionmaker]]:
    settings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"w{uuid.uuid4().hex[:6]}.",
        database_url=database_url,
        model=str(trained_tiny_model),
        one_record_per_batch=True,
        batch_size=4,
        batch_wait_ms=300,
        max_attempts=2,
        model_poll_s=1.0,
        max_new_tokens=120,
    )
    ensure_topics(broker.bootstrap, settings)
    engine = create_engine(database_url, connect_args={"application_name": APP}, pool_pre_ping=True)
    factory = sessionmaker(engine)
    deploy(factory, version=model_version_of(trained_tiny_model), path=str(trained_tiny_model), demo=True)
    yield settings, factory
    engine.dispose()


def publish_clips(settings: Settings, count: int, seed: int, vehicles: int = 3) -> list[ClipMessage]:
    blobs = LocalBlobStore(settings.blobs)
    producer = make_producer(settings.kafka_bootstrap, settings)
    out = []
    for s in make_scenarios(seed, count, fleet_id="fleet-w", vehicles=vehicles, duration=12.0):
        frames = scenario_frames(s, settings)
        clip_id = f"{s.scenario_id}-{uuid.uuid4().hex[:8]}"
        uri = blobs.put_bytes(f"clips/{s.vehicle_id}/{clip_id}.npz", frames.to_npz())
        clip = scenario_clip(s, frames, clip_id=clip_id, frames_uri=uri)
        producer.send(
            settings.topic("clips"), key=s.vehicle_id.encode(), value=clip.model_dump_json().encode()
        ).get(10)
        out.append(clip)
    producer.close()
    return out


def landed(factory: sessionmaker, clips: list[ClipMessage]) -> dict[str, str]:
    with factory() as session:
        rows = session.execute(
            select(Inference.clip_id, Inference.model_version).where(
                Inference.clip_id.in_([c.clip_id for c in clips])
            )
        )
        return {clip_id: version for clip_id, version in rows}


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A counter's current value in the process-wide registry (0 before its first increment). Tests compare values
    before and after, since every test (and every parametrisation) shares the registry."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def inferences_counted(model_version: str) -> float:
    return sum(
        sample("drivecoach_inferences_total", {"model_version": model_version, "valid": v})
        for v in ("true", "false")
    )


class Recorded(logging.Handler):
    """Keeps the messages a logger emits (the worker runs in a thread of this process)."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.WARNING)
        self.logger, self.messages = logging.getLogger(logger), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Self:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)


def start(worker: InferenceWorker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def run_until(worker: InferenceWorker, done, timeout_s: float = 180.0) -> None:
    """Run the worker in a thread until `done()` (the first group join on the embedded broker takes ~15 s)."""
    thread = start(worker)
    try:
        wait_until(done, timeout_s)
    finally:
        worker.stop()
        thread.join(60)


class Borrowed:
    """A session-wide engine lent to one worker: the worker may drop it, but only the session closes it."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.model_version = engine, engine.model_version

    def run_batch(self, clips: list[np.ndarray], telemetry=None) -> list[CotOutput]:
        return self.engine.run_batch(clips, telemetry)

    def submit(self, frames: np.ndarray, telemetry=()) -> Future[CotOutput]:
        return self.engine.submit(frames, telemetry)


@pytest.fixture(params=["transformers", "vllm", "openai"])
def engines(request, trained_tiny_model: Path):
    """path -> engine, for each of the three engines; vLLM's and the server's are shared by the session (each
    starts processes), and a path other than the trained model's gets its own in-process vLLM engine."""
    factory = _engines(request, trained_tiny_model)
    factory.kind = request.param
    return factory


def _engines(request, trained_tiny_model: Path):
    kind = request.param
    if kind == "transformers":
        return lambda path: TransformersEngine(path, max_new_tokens=120)
    if kind == "vllm":
        shared = request.getfixturevalue("vllm_engine")

        def vllm(path: str) -> Engine:
            if Path(path) == Path(trained_tiny_model):
                return Borrowed(shared)
            from streams.inference.engines.vllm import VllmEngine

            return VllmEngine(path, max_new_tokens=120)

        return vllm
    url = request.getfixturevalue("vllm_server")

    def served(path: str) -> Engine:
        from streams.inference.engines.openai import OpenAIEngine

        return OpenAIEngine(url, str(trained_tiny_model), max_new_tokens=120)

    return served


def test_batches_land_once_with_their_figures_and_a_replay_changes_nothing(setup, engines) -> None:
    settings, factory = setup
    version = model_version_of(settings.model)
    clips = publish_clips(settings, 6, seed=41)
    counted = inferences_counted(version)
    worker = InferenceWorker(settings, settings.kafka_bootstrap, engines, factory, model_path=settings.model)
    run_until(worker, lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings))
    assert worker.processed == 6
    assert inferences_counted(version) - counted == 6  # this run's writes, not the registry's history
    with factory() as session:
        rows = list(
            session.scalars(select(Inference).where(Inference.clip_id.in_([c.clip_id for c in clips])))
        )
        assert len(rows) == 6 and {r.model_version for r in rows} == {model_version_of(settings.model)}
        assert all(r.latency_ms > 0 and r.prompt_tokens > 0 and r.generated_tokens > 0 for r in rows)
        assert {r.prompt_version for r in rows} == {"cot-v2"}  # asked with each clip's telemetry in turn 1
        first_written = {r.clip_id: r.updated_at for r in rows}
    assert committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings)

    _rewind(settings)  # replay the whole topic
    again = InferenceWorker(settings, settings.kafka_bootstrap, engines, factory, model_path=settings.model)
    run_until(again, lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings))
    assert again.processed == 6
    assert inferences_counted(version) - counted == 12  # the replay was answered and written again
    with factory() as session:
        ours = Inference.clip_id.in_([c.clip_id for c in clips])
        assert session.scalar(select(func.count()).select_from(Inference).where(ours)) == 6
        assert session.scalar(select(func.count()).select_from(Instruction).join(Inference).where(ours)) == 6
        rewritten = dict(session.execute(select(Inference.clip_id, Inference.updated_at).where(ours)).all())
    assert all(rewritten[c] > first_written[c] for c in first_written)  # replayed, upserted, not duplicated


class FlakyEngine:
    """A real engine with faults injected: the first batch it ever sees crashes (a transient failure); any batch
    holding the poison clip crashes every time."""

    def __init__(self, inner: Engine, poison: np.ndarray, history: dict[str, bool]) -> None:
        self.inner, self.poison, self.history = inner, poison, history
        self.model_version = inner.model_version

    def run_batch(self, clips: list[np.ndarray], telemetry=None) -> list[CotOutput]:
        if not self.history.get("crashed"):
            self.history["crashed"] = True
            raise RuntimeError("engine process died")
        if any(c.shape == self.poison.shape and np.array_equal(c, self.poison) for c in clips):
            raise RuntimeError("this clip kills the engine")
        return self.inner.run_batch(clips, telemetry)


def test_engine_failures_restart_the_engine_and_only_the_poison_clip_is_dead_lettered(setup, engines) -> None:
    settings, factory = setup
    clips = publish_clips(settings, 5, seed=42)
    poison = np.load(LocalBlobStore(settings.blobs).path(clips[2].frames_uri))["frames"]
    loads: list[str] = []
    history: dict[str, bool] = {}

    def flaky(path: str) -> Engine:
        loads.append(path)
        return FlakyEngine(engines(path), poison, history)

    dead_before = sample("drivecoach_inference_dead_letters_total", {"reason": "inference_failed"})
    restarts_before = sample("drivecoach_engine_restarts_total")
    counted = inferences_counted(model_version_of(settings.model))
    worker = InferenceWorker(settings, settings.kafka_bootstrap, flaky, factory, model_path=settings.model)
    run_until(worker, lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings))
    assert worker.processed == 5
    assert worker.restarts >= 2 and len(loads) == worker.restarts + 1  # every failure got a fresh engine
    # Deltas: the registry is process-wide, and earlier tests (other parametrisations) counted too.
    assert (
        sample("drivecoach_inference_dead_letters_total", {"reason": "inference_failed"}) - dead_before == 1
    )
    assert sample("drivecoach_engine_restarts_total") - restarts_before == worker.restarts
    assert inferences_counted(model_version_of(settings.model)) - counted == 4  # all but the poison clip
    assert set(landed(factory, clips)) == {c.clip_id for i, c in enumerate(clips) if i != 2}
    dead = read_topic(settings.kafka_bootstrap, settings.topic("clips.dlq"), settings.partitions)
    assert [(json.loads(d["payload"])["clip_id"], d["reason"]) for d in dead] == [
        (clips[2].clip_id, "inference_failed")
    ]
    assert committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings)


def test_a_postgres_outage_stops_commits_and_loses_nothing(setup, engines, database_url: str) -> None:
    """The worker meets the outage (its writes fail and are retried: logged), commits no offset while Postgres is
    unreachable, and once it is back writes every clip (after the outage: the rows' write times say so) and commits
    the topic's end. The outage outlasts `max_poll_interval_ms`: the worker keeps polling (its partitions paused),
    so the group keeps it: no second assignment, no failed commit."""
    settings, factory = setup
    settings = settings.model_copy(update={"max_poll_interval_ms": 4_000})
    name = database_url.rsplit("/", 1)[1]
    assignments = sample("drivecoach_rebalances_total")
    worker = InferenceWorker(settings, settings.kafka_bootstrap, engines, factory, model_path=settings.model)
    admin = create_engine(database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    thread = start(worker)
    try:
        with Recorded("streams.inference.worker") as logged:
            clips = publish_clips(settings, 4, seed=43)
            wait_until(lambda: len(landed(factory, clips)) == 4, what="the first clips written")
            wait_until(
                lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings),
                what="the first clips committed",
            )
            before = committed_offsets(settings.kafka_bootstrap, settings)
            assert sum(before.values()) == 4 and not _write_retries(logged)
            with admin.connect() as conn:  # the database stops accepting connections and drops the worker's
                conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :a"
                    ),
                    {"a": APP},
                )
            more = publish_clips(settings, 4, seed=44)
            seen: list[dict[int, int]] = []

            def retried_while_nothing_committed() -> bool:
                seen.append(committed_offsets(settings.kafka_bootstrap, settings))
                return (
                    len(_write_retries(logged)) >= 4
                )  # backed off 0.5, 1, 2, 4 s: longer than max_poll_interval

            wait_until(retried_while_nothing_committed, what="the worker's writes failing and being retried")
            assert thread.is_alive()
            assert all(s == before for s in seen), seen  # no offset committed while Postgres was unreachable
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
                back_at = conn.execute(text("SELECT now()")).scalar_one()
            wait_until(lambda: len(landed(factory, clips + more)) == 8, what="every clip written")
            wait_until(
                lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings),
                what="every offset committed",
            )
        assert sum(_ends(settings).values()) == 8
        assert sample("drivecoach_rebalances_total") - assignments == 1  # the first assignment, and no other
        assert not [m for m in logged.messages if m.startswith("commit failed")]
        with factory() as session:
            written = session.scalars(
                select(Inference.updated_at).where(Inference.clip_id.in_([c.clip_id for c in more]))
            ).all()
        assert len(written) == 4
        assert all(t >= back_at for t in written), (written, back_at)  # written after the outage, not before
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
        worker.stop()
        thread.join(60)


def _write_retries(logged: Recorded) -> list[str]:
    return [m for m in logged.messages if m.startswith("Postgres unavailable")]


# The server (openai) engine is left out: one OpenAI-API server serves one model, so a promotion there means
# pointing the worker at another server, which the worker's engine factory (path -> engine) does not model.
@pytest.mark.parametrize("engines", ["transformers", "vllm"], indirect=True)
def test_a_promotion_switches_the_model_between_batches_without_losing_a_clip(
    setup, engines, tmp_path: Path
) -> None:
    settings, factory = setup
    old = model_version_of(settings.model)
    candidate = tmp_path / "candidate"
    shutil.copytree(settings.model, candidate)
    meta = json.loads((candidate / "drivecoach.json").read_text())
    (candidate / "drivecoach.json").write_text(json.dumps(meta | {"note": "retrained"}))
    new = model_version_of(candidate)
    assert new != old
    worker = InferenceWorker(settings, settings.kafka_bootstrap, engines, factory, model_path=settings.model)
    thread = start(worker)
    try:
        before = publish_clips(settings, 3, seed=45)
        wait_until(lambda: len(landed(factory, before)) == 3)
        deploy(factory, version=new, path=str(candidate), demo=True)
        wait_until(lambda: worker.engine is not None and worker.engine.model_version == new)
        after = publish_clips(settings, 3, seed=46)
        wait_until(lambda: len(landed(factory, after)) == 3)
    finally:
        worker.stop()
        thread.join(60)
    assert set(landed(factory, before).values()) == {old}
    assert set(landed(factory, after).values()) == {new}


def _ends(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    tps = [TopicPartition(settings.topic("clips"), p) for p in range(settings.partitions)]
    ends = consumer.end_offsets(tps)
    consumer.close()
    return {tp.partition: off for tp, off in ends.items()}


def _rewind(settings: Settings) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=inference_group(settings),
        enable_auto_commit=False,
        api_version=(2, 0, 0),
    )
    consumer.commit(
        {
            TopicPartition(settings.topic("clips"), p): OffsetAndMetadata(0, "", -1)
            for p in range(settings.partitions)
        }
    )
    consumer.close(autocommit=False)


def test_a_killed_vllm_engine_process_is_restarted_and_no_clip_is_lost(setup) -> None:
    """A real crash: the in-process vLLM engine's core process is killed; the worker restarts the engine."""
    import psutil
    import vllm  # noqa: F401 - installed by `make test`: a missing or broken vLLM fails, never skips

    from streams.inference.engines.vllm import VllmEngine

    settings, factory = setup
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    worker = InferenceWorker(
        settings,
        settings.kafka_bootstrap,
        lambda path: VllmEngine(path, max_new_tokens=120),
        factory,
        model_path=settings.model,
    )
    spawned = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert spawned, "the vLLM engine should run in its own processes"
    for proc in spawned:
        proc.kill()
    clips = publish_clips(settings, 3, seed=47)
    try:
        run_until(worker, lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings))
    finally:
        close = getattr(worker.engine, "close", None)
        if callable(close):
            close()
    assert worker.restarts >= 1
    assert set(landed(factory, clips)) == {c.clip_id for c in clips}


class Counting:
    """A real engine whose calls are counted per clip."""

    def __init__(self, inner: Engine, calls: list[int]) -> None:
        self.inner, self.calls, self.model_version = inner, calls, inner.model_version

    def run_batch(self, clips: list[np.ndarray], telemetry=None) -> list[CotOutput]:
        self.calls.append(len(clips))
        return self.inner.run_batch(clips, telemetry)


def test_an_invalid_answer_is_asked_once_more_then_stored_invalid_with_its_raw_text(setup) -> None:
    settings, factory = setup
    settings = settings.model_copy(update={"max_new_tokens": 6})  # turn 1 is cut off: never valid JSON
    clips = publish_clips(settings, 2, seed=48)
    calls: list[int] = []
    worker = InferenceWorker(
        settings,
        settings.kafka_bootstrap,
        lambda path: Counting(TransformersEngine(path, max_new_tokens=6), calls),
        factory,
        model_path=settings.model,
    )
    run_until(worker, lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings))
    assert sum(calls) == 2 * 2  # every clip: the first answer, then once more
    with factory() as session:
        rows = list(
            session.scalars(select(Inference).where(Inference.clip_id.in_([c.clip_id for c in clips])))
        )
    assert len(rows) == 2
    assert all(
        not r.valid and r.error and r.raw_turn1.startswith("{") and len(r.raw_turn1) < 40 for r in rows
    )


def test_data_parallel_workers_share_the_partitions_and_each_clip_lands_once(setup) -> None:
    """Two workers (one per GPU in production) in one consumer group: once the group has settled each owns one of
    the two partitions, every clip is answered by the owner of its partition, and the group's offsets reach the
    topic's end. More workers than partitions would idle: the partition count bounds the worker count."""
    settings, factory = setup
    workers = [
        InferenceWorker(
            settings,
            settings.kafka_bootstrap,
            lambda path: TransformersEngine(path, max_new_tokens=120),
            factory,
            model_path=settings.model,
        )
        for _ in range(2)
    ]
    threads = [start(w) for w in workers]
    try:
        wait_until(
            lambda: [len(w.consumer.assignment()) for w in workers] == [1, 1], 120, what="one partition each"
        )
        clips = publish_clips(settings, 8, seed=49, vehicles=8)
        ends = _ends(settings)
        assert all(n > 0 for n in ends.values()), "the clips should fall on both partitions"
        wait_until(lambda: committed_offsets(settings.kafka_bootstrap, settings) == ends, 300)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(60)
    assert set(landed(factory, clips)) == {c.clip_id for c in clips}
    assert sorted(w.processed for w in workers) == sorted(
        ends.values()
    )  # each its own partition's clips, once


def test_an_answer_the_database_refuses_is_dead_lettered_and_its_batch_still_lands(setup) -> None:
    """Not an outage: Postgres refuses one clip's rows (a NUL byte in a text field). The batch is written again
    clip by clip, the refused one goes to clips.dlq as `unwritable_result`, and the worker goes on (before the
    pipelined worker, the exception ended it, and a restart met the same clip again)."""
    settings, factory = setup
    settings = settings.model_copy(
        update={"batch_size": 8, "batch_wait_ms": 2_000}
    )  # the answers share a batch
    clips = publish_clips(settings, 3, seed=50)
    bad = clips[1].model_copy(update={"clip_id": f"{clips[1].clip_id}-nul", "driver_id": "drv\x00nul"})
    producer = make_producer(settings.kafka_bootstrap, settings)
    producer.send(settings.topic("clips"), key=b"veh-nul", value=bad.model_dump_json().encode()).get(10)
    producer.close()
    worker = InferenceWorker(
        settings,
        settings.kafka_bootstrap,
        lambda path: TransformersEngine(path, max_new_tokens=120),
        factory,
        model_path=settings.model,
    )
    run_until(worker, lambda: committed_offsets(settings.kafka_bootstrap, settings) == _ends(settings))
    assert set(landed(factory, clips + [bad])) == {c.clip_id for c in clips}
    dead = read_topic(settings.kafka_bootstrap, settings.topic("clips.dlq"), settings.partitions)
    assert [(json.loads(d["payload"])["clip_id"], d["reason"]) for d in dead] == [
        (bad.clip_id, "unwritable_result")
    ]
    assert "NUL" in dead[0]["detail"] or "0x00" in dead[0]["detail"]
