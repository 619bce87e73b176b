"""`drivecoach bench infer --worker`: the inference worker end to end (Kafka in, Postgres out) against the engine
alone at the same concurrency, continuous against batch-synchronous, on the same clips in the same run, and the CPU
preprocessing a clip costs (frames loaded from the blob store, the processor's two prompts)."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.frames import load_frames
from schemas.generation import CotOutput
from schemas.messages import ClipMessage
from streams.inference.engines.base import Engine, Telemetry
from streams.inference.worker import MAX_ASKS, valid_answer
from streams.settings import Settings


@dataclass(frozen=True)
class Run:
    label: str
    clips: int
    wall_s: float
    latencies_s: tuple[
        float, ...
    ]  # per clip: submitted (the engine alone) or polled (the worker) -> answered/written
    asks: int  # clips handed to the engine: an answer that fails validation is asked for once more, in every run

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s

    @property
    def asks_per_clip(self) -> float:
        return self.asks / self.clips

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_s, 50)) * 1000.0

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_s, 95)) * 1000.0


@dataclass(frozen=True)
class Preprocessing:
    """CPU per clip outside the model: measured on their own, one clip at a time, on the same clips."""

    load_ms: float  # blob read + npz decode
    processor_ms: float  # the Qwen2.5-VL processor on both turns' prompts (video patches, tokenizer)

    @property
    def total_ms(self) -> float:
        return self.load_ms + self.processor_ms


@dataclass(frozen=True)
class WorkerBench:
    frames: int
    concurrency: int
    batch: int
    engine_continuous: Run
    worker_continuous: Run
    engine_batch: Run
    worker_batch: Run
    preprocessing: Preprocessing
    same_answers: bool  # the worker's rows hold the engine-alone answers, in both modes

    @property
    def worker_ratio(self) -> float:
        return self.worker_continuous.clips_per_s / self.engine_continuous.clips_per_s

    @property
    def continuous_over_batch(self) -> float:
        return self.worker_continuous.clips_per_s / self.worker_batch.clips_per_s


class _Lent:
    """The benchmark's engine lent to a worker: the worker must not close it (the next run uses it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.model_version = engine, engine.model_version

    def run_batch(
        self, clips: list[np.ndarray], telemetry: Sequence[Telemetry] | None = None
    ) -> list[CotOutput]:
        return self.engine.run_batch(clips, telemetry)

    def submit(self, frames: np.ndarray, telemetry: Telemetry = ()) -> Future[CotOutput]:
        return self.engine.submit(frames, telemetry)  # type: ignore[attr-defined]


def engine_alone_continuous(
    engine: Engine, clips: list[np.ndarray], concurrency: int, telemetry: Sequence[Telemetry] | None = None
) -> tuple[Run, list[CotOutput]]:
    """Up to `concurrency` clips in the engine at once, the next submitted as one finishes; an invalid answer is
    asked for once more, first in line, as the worker does (else the baseline would do less work than the worker:
    an untrained model's answers mostly fail validation). `telemetry`: each clip's, as the worker passes it."""
    submit: Callable[[np.ndarray, Telemetry], Future[CotOutput]] = engine.submit  # type: ignore[attr-defined]
    samples = list(telemetry) if telemetry is not None else [()] * len(clips)
    answers: dict[int, CotOutput] = {}
    latencies: list[float] = []
    asked = [0] * len(clips)
    first_submitted: dict[int, float] = {}
    in_flight: dict[Future[CotOutput], int] = {}
    waiting = deque(range(len(clips)))
    started = time.perf_counter()
    while waiting or in_flight:
        while waiting and len(in_flight) < concurrency:
            k = waiting.popleft()
            asked[k] += 1
            first_submitted.setdefault(k, time.perf_counter())
            in_flight[submit(clips[k], samples[k])] = k
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            k = in_flight.pop(future)
            cot = future.result()
            if not valid_answer(cot) and asked[k] < MAX_ASKS:
                waiting.appendleft(k)
                continue
            answers[k] = cot
            latencies.append(time.perf_counter() - first_submitted[k])
    wall = time.perf_counter() - started
    run = Run("engine alone, continuous", len(clips), wall, tuple(latencies), sum(asked))
    return run, [answers[i] for i in range(len(clips))]


def engine_alone_batches(
    engine: Engine, clips: list[np.ndarray], batch: int, telemetry: Sequence[Telemetry] | None = None
) -> tuple[Run, list[CotOutput]]:
    """The worker before issue 16: batches, each clip waiting for its batch's slowest; a batch's invalid answers
    are asked for once more, together, before the next batch. `telemetry`: each clip's, as the worker passes it."""
    samples = list(telemetry) if telemetry is not None else [()] * len(clips)
    answers: list[CotOutput] = []
    latencies: list[float] = []
    asks = 0
    started = time.perf_counter()
    for k in range(0, len(clips), batch):
        t0 = time.perf_counter()
        chunk, chunk_samples = clips[k : k + batch], samples[k : k + batch]
        got = engine.run_batch(chunk, chunk_samples)
        asks += len(chunk)
        again = [i for i, cot in enumerate(got) if not valid_answer(cot)]
        if again:
            retried = engine.run_batch([chunk[i] for i in again], [chunk_samples[i] for i in again])
            for i, cot in zip(again, retried, strict=True):
                got[i] = cot
            asks += len(again)
        latencies += [time.perf_counter() - t0] * len(got)
        answers += got
    wall = time.perf_counter() - started
    return Run("engine alone, batches", len(clips), wall, tuple(latencies), asks), answers


def worker_run(
    settings: Settings, engine: Engine, messages: list[ClipMessage], session_factory, label: str
) -> tuple[Run, dict[str, tuple[str, str]]]:
    """The clips published to a topic of their own, then one worker through them: wall from its first poll to its
    last durable write (the group join before it is not the worker's throughput)."""
    from sqlalchemy import select

    from schemas.db import Inference
    from streams.inference.worker import InferenceWorker
    from streams.infra.topics import CLIPS_TOPIC, ensure_topics
    from streams.producer import make_producer

    ensure_topics(settings.kafka_bootstrap, settings)
    producer = make_producer(settings.kafka_bootstrap, settings)
    for m in messages:
        producer.send(
            settings.topic(CLIPS_TOPIC), key=m.vehicle_id.encode(), value=m.model_dump_json().encode()
        )
    producer.flush()
    producer.close()
    worker = InferenceWorker(
        settings,
        settings.kafka_bootstrap,
        lambda _path: _Lent(engine),
        session_factory,
        model_path=settings.model,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 1800
    while worker.processed < len(messages) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    thread.join(120)
    if worker.processed < len(messages) or worker.first_polled is None or worker.last_durable is None:
        raise RuntimeError(f"{label}: the worker handled {worker.processed} of {len(messages)} clips")
    with session_factory() as session:
        rows = session.execute(
            select(Inference.clip_id, Inference.raw_turn1, Inference.raw_turn2).where(
                Inference.clip_id.in_([m.clip_id for m in messages])
            )
        )
        written = {clip_id: (t1, t2) for clip_id, t1, t2 in rows}
    wall = worker.last_durable - worker.first_polled
    return Run(label, len(messages), wall, tuple(worker.latencies), worker.submitted), written


def preprocessing_per_clip(
    model: str, frames_blobs: list[bytes], answers: list[CotOutput], messages: list[ClipMessage]
) -> Preprocessing:
    from schemas.model_io import build_inputs, load_processor
    from schemas.prompts import Prompt, conversation

    processor = load_processor(model)
    load_s = processor_s = 0.0
    for data, answer, message in zip(frames_blobs, answers, messages, strict=True):
        t0 = time.perf_counter()
        frames = load_frames(io.BytesIO(data))  # type: ignore[arg-type]
        t1 = time.perf_counter()
        # Summarising the telemetry is the engines' preprocessing too.
        prompt = Prompt.for_clip(message.telemetry, answer.prompt_version)
        build_inputs(processor, conversation(prompt=prompt), frames, add_generation_prompt=True)
        build_inputs(processor, conversation(answer.turn1, prompt=prompt), frames, add_generation_prompt=True)
        t2 = time.perf_counter()
        load_s, processor_s = load_s + (t1 - t0), processor_s + (t2 - t1)
    n = len(frames_blobs)
    return Preprocessing(load_ms=load_s / n * 1000.0, processor_ms=processor_s / n * 1000.0)


def bench_worker(
    settings: Settings,
    work: Path,
    engine: Engine,
    *,
    model: str,
    clips: int = 16,
    concurrency: int = 16,
    batch: int = 8,
    say: Callable[[str], None] = print,
) -> WorkerBench:
    """Four runs on the same clips and the same engine: the engine alone and the worker, continuous (up to
    `concurrency` clips in flight) and in batches of `batch`. A broker is started unless the settings name one; the
    rows go to a database of their own, dropped at the end."""
    from sqlalchemy.orm import sessionmaker

    from streams.demo import scenario_clip, scenario_frames
    from streams.infra.blobs import LocalBlobStore
    from streams.infra.broker import EmbeddedBroker
    from streams.infra.database import drop_scratch_database, make_engine, migrate, scratch_database
    from streams.simulate import make_scenarios

    scenarios = make_scenarios(5, clips, vehicles=4, duration=12.0)
    rendered = [scenario_frames(s, settings) for s in scenarios]
    frames = [r.frames for r in rendered]
    blobs = LocalBlobStore(work / "blobs")
    messages, blob_bytes = [], []
    for s, r in zip(scenarios, rendered, strict=True):
        data = r.to_npz()
        blob_bytes.append(data)
        clip_id = f"{s.scenario_id}-{uuid.uuid4().hex[:8]}"
        uri = blobs.put_bytes(f"clips/{clip_id}.npz", data)
        messages.append(scenario_clip(s, r, clip_id=clip_id, frames_uri=uri, sample_fps=settings.sample_fps))
    samples = [m.telemetry for m in messages]  # each clip's, as the worker passes it to the engine
    say("warming the engine up")
    engine.run_batch(frames[:1], samples[:1])
    with ExitStack() as stack:
        bootstrap, one_record = settings.kafka_bootstrap, settings.one_record_per_batch
        if not bootstrap:
            say("starting the embedded broker (Tansu)")
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=work / "broker.log")).bootstrap
            one_record = True
        database = scratch_database(settings, f"drivecoach_bench_{uuid.uuid4().hex[:6]}")
        stack.callback(database.close)
        stack.callback(drop_scratch_database, database, None)
        migrate(database.url)
        db = make_engine(database.url, pool_size=4)
        stack.callback(db.dispose)
        factory = sessionmaker(db)

        def run_settings(mode: str) -> Settings:
            return settings.model_copy(
                update={
                    "kafka_bootstrap": bootstrap,
                    "one_record_per_batch": one_record,
                    "topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
                    "blob_dir": work / "blobs",
                    "blob_url": "",
                    "model": model,
                    "inference_mode": mode,
                    "max_in_flight": concurrency,
                    "batch_size": batch,
                    "model_poll_s": 3600.0,
                }
            )

        say(f"the engine alone, up to {concurrency} clips in flight")
        engine_cont, alone = engine_alone_continuous(engine, frames, concurrency, samples)
        say("the worker, continuous")
        worker_cont, written_cont = worker_run(
            run_settings("continuous"), engine, messages, factory, "worker, continuous"
        )
        say(f"the engine alone, batches of {batch}")
        engine_batch, alone_batch = engine_alone_batches(engine, frames, batch, samples)
        say("the worker, batches")
        # Another copy of the clips (fresh ids), so the batch run writes rows of its own.
        again = [m.model_copy(update={"clip_id": f"{m.clip_id}-b"}) for m in messages]
        worker_batch, written_batch = worker_run(
            run_settings("batch"), engine, again, factory, "worker, batches"
        )
    expected = [(a.turn1, a.turn2) for a in alone]
    same = [written_cont.get(m.clip_id) for m in messages] == expected and [
        written_batch.get(m.clip_id) for m in again
    ] == [(a.turn1, a.turn2) for a in alone_batch]
    say("preprocessing, one clip at a time")
    pre = preprocessing_per_clip(model, blob_bytes, alone, messages)
    return WorkerBench(
        frames=int(frames[0].shape[0]),
        concurrency=concurrency,
        batch=batch,
        engine_continuous=engine_cont,
        worker_continuous=worker_cont,
        engine_batch=engine_batch,
        worker_batch=worker_batch,
        preprocessing=pre,
        same_answers=same,
    )


__all__ = ["Preprocessing", "Run", "WorkerBench", "bench_worker"]
