"""`bench infer --worker` on the real broker, Postgres and the session's vLLM engine: the four runs see the same
clips, the worker writes exactly the answers the engine alone gives, and the figures are the runs' own."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.worker import bench_worker
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_the_worker_bench_runs_each_mode_on_the_same_clips(
    broker, database_url: str, vllm_engine, trained_tiny_model: Path, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        one_record_per_batch=True,
        database_url=database_url,
    )
    result = bench_worker(
        settings,
        tmp_path,
        vllm_engine,
        model=str(trained_tiny_model),
        clips=6,
        concurrency=6,
        batch=3,
        say=lambda _: None,
    )
    runs = (result.engine_continuous, result.worker_continuous, result.engine_batch, result.worker_batch)
    assert [r.clips for r in runs] == [6, 6, 6, 6]
    assert all(len(r.latencies_s) == 6 and r.wall_s > 0 and r.p95_ms >= r.p50_ms > 0 for r in runs)
    # A batch's clips all wait for the batch: in batch mode the engine alone reports one latency per batch.
    assert len(set(result.engine_batch.latencies_s)) == 2
    assert result.same_answers  # the worker wrote what the engine alone answers, in both modes
    # ... after the same work: an answer that fails validation is asked for once more by the worker and the baseline
    assert result.engine_continuous.asks == result.worker_continuous.asks >= 6
    assert result.engine_batch.asks == result.worker_batch.asks >= 6
    assert result.frames == 24 and result.preprocessing.load_ms > 0 and result.preprocessing.processor_ms > 0
    assert result.worker_ratio > 0 and result.continuous_over_batch > 0
