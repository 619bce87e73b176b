"""Engine options that must not change answers: vLLM's dtype follows the checkpoint, and the one-at-a-time adapter
gives a batch-only engine the worker's `submit`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from schemas.messages import TelemetrySample
from streams.inference.engines.base import ConcurrentEngine, CotOutput, OneAtATime, concurrent
from streams.inference.engines.vllm import checkpoint_dtype


def test_auto_dtype_is_the_checkpoints_own(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert checkpoint_dtype(tmp_path) == "float32"  # vLLM's own auto would serve it in 16 bits
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert checkpoint_dtype(tmp_path) == "bfloat16"
    assert checkpoint_dtype(tmp_path, "float16") == "float16"  # an explicit choice wins
    assert checkpoint_dtype(tmp_path / "missing") == "auto"


class BatchOnly:
    model_version = "v1"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run_batch(self, clips: list[np.ndarray], telemetry=None) -> list[CotOutput]:
        self.calls.append(len(clips))
        self.telemetry = telemetry
        return [CotOutput("{}", f"clip of {len(c)} frames", 1, 1, 1.0) for c in clips]


def test_a_batch_only_engine_answers_submitted_clips_one_at_a_time() -> None:
    inner = BatchOnly()
    engine = concurrent(inner)
    assert isinstance(engine, OneAtATime) and isinstance(engine, ConcurrentEngine)
    futures = [engine.submit(np.zeros((n, 2, 2, 3), np.uint8)) for n in (2, 4, 6)]
    assert [f.result(10).turn2 for f in futures] == [
        "clip of 2 frames",
        "clip of 4 frames",
        "clip of 6 frames",
    ]
    assert inner.calls == [1, 1, 1]
    samples = (TelemetrySample(t=0.0, speed_kmh=30.0),)
    assert engine.submit(np.zeros((2, 2, 2, 3), np.uint8), samples).result(10).turn1 == "{}"
    assert inner.telemetry == [samples]  # the clip's telemetry goes with it
    engine.close()
