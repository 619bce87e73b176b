"""`drivecoach bench infer`: clips/s and p50/p95 latency per engine, on the same clips."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.settings import Settings
from streams.simulate import make_scenarios


@dataclass(frozen=True)
class InferBench:
    engine: str
    model: str
    batch: int
    frames: int
    clips: int
    wall_s: float
    latencies_ms: tuple[float, ...]
    generated_tokens: int
    answers: tuple[tuple[str, str], ...]

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))


def build_tiny_model_process(out: Path, corpus: list[str], *, seed: int = 0) -> Path:
    """The untrained tiny DEMO Qwen2.5-VL in `out`, its tokenizer trained on `corpus` too: `training.tiny_model`
    in its own process (streams never imports training; the demo starts training the same way)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    corpus_file = out.with_name(f"{out.name}.corpus.json")
    corpus_file.write_text(json.dumps(corpus))
    cmd = [sys.executable, "-m", "training.tiny_model", "--out", str(out), "--seed", str(seed)]
    done = subprocess.run(
        [*cmd, "--corpus-file", str(corpus_file)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny model failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return out


def bench_infer(
    settings: Settings,
    work: Path,
    *,
    clips: int = 16,
    batch: int = 8,
    model: str | None = None,
    engines: list[str] | None = None,
) -> list[InferBench]:
    """The same clips through each engine after one warm-up clip; wall time, since engines run their own processes.

    Without `model`, an untrained tiny Qwen2.5-VL is built here: speed depends on the shapes, not the weights.
    """
    from schemas.generation import TransformersEngine
    from schemas.prompts import format_turn1
    from streams.demo import scenario_frames, scenario_telemetry
    from streams.inference.engines.base import Engine

    path = model or str(build_tiny_model_process(work / "tiny", [format_turn1([]), "Keep a safe distance."]))
    scenarios = make_scenarios(5, clips, vehicles=4, duration=12.0)
    frames = [scenario_frames(s, settings).frames for s in scenarios]
    samples = [scenario_telemetry(s) for s in scenarios]  # each clip's, as the worker passes it
    results = []
    engine: Engine
    for name in engines or ["transformers", "vllm"]:
        if name == "transformers":
            engine, size = TransformersEngine(path, max_new_tokens=settings.max_new_tokens), 1
        elif name == "vllm":
            from streams.inference.engines.vllm import VllmEngine

            engine, size = VllmEngine(path, max_new_tokens=settings.max_new_tokens), batch
        else:
            raise ValueError(f"unknown engine {name!r} (transformers or vllm)")
        engine.run_batch(frames[:1], samples[:1])  # warm-up: first-call allocations and compilation
        latencies: list[float] = []
        outputs = []
        started = time.perf_counter()
        for k in range(0, len(frames), size):
            t0 = time.perf_counter()
            got = engine.run_batch(frames[k : k + size], samples[k : k + size])
            latencies += [(time.perf_counter() - t0) * 1000.0] * len(got)
            outputs += got
        wall = time.perf_counter() - started
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        results.append(
            InferBench(
                engine=name,
                model=Path(path).name,
                batch=size,
                frames=int(frames[0].shape[0]),
                clips=len(frames),
                wall_s=wall,
                latencies_ms=tuple(latencies),
                generated_tokens=sum(o.generated_tokens for o in outputs),
                answers=tuple((o.turn1, o.turn2) for o in outputs),
            )
        )
    return results
