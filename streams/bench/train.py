"""`drivecoach bench train`: ZeRO-2 fine-tuning steps per second."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.settings import Settings
from streams.simulate import make_scenarios


@dataclass(frozen=True)
class TrainBench:
    processes: int
    steps: int
    samples_per_s: float  # the Trainer's own figure (its train loop only)
    tokens_per_sample: float  # mean sequence length: video tokens + both turns
    wall_s: float  # the whole launch, DeepSpeed start-up included

    @property
    def tokens_per_s(self) -> float:
        return self.samples_per_s * self.tokens_per_sample


def mean_sequence_length(model: Path, data: Path) -> float:
    """Mean tokens per training example of `data/data.json` (video tokens + both turns) for the model's processor."""
    from schemas.messages import TelemetrySample
    from schemas.model_io import build_inputs, load_processor
    from schemas.prompts import Prompt, conversation

    processor = load_processor(model)
    lengths = []
    for record in json.loads((data / "data.json").read_text()):
        samples = [TelemetrySample.model_validate(t) for t in record.get("telemetry") or ()]
        prompt = Prompt.for_clip(samples)  # as `training.finetune` renders it (its default prompt version)
        with np.load(data / record["frames"]) as d:
            inputs = build_inputs(
                processor,
                conversation(record["turn1"], record["turn2"], prompt=prompt),
                d["frames"],
                add_generation_prompt=False,
            )
        lengths.append(int(inputs["input_ids"].shape[1]))
    return float(np.mean(lengths))


def bench_train(
    settings: Settings, work: Path, *, steps: int = 40, processes: int = 2, clips: int = 16
) -> TrainBench:
    """ZeRO-2 fine-tuning throughput of the tiny model on CPU: `training.finetune` under torchrun, as the job runs it."""
    import ast
    import subprocess
    import sys

    from streams.bench.infer import build_tiny_model_process
    from streams.demo import write_training_set

    scenarios = make_scenarios(77, clips, vehicles=4, duration=10.0)
    data = write_training_set(scenarios, work / "data", settings)
    base = build_tiny_model_process(
        work / "base", [t for s in scenarios for t in (s.truth_turn1, s.instruction)], seed=0
    )
    tokens_per_sample = mean_sequence_length(base, data)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "-m",
        "training.finetune",
        "--data",
        str(data),
        "--index",
        "data.json",
        "--model",
        str(base),
        "--out",
        str(work / "out"),
        "--max-steps",
        str(steps),
        "--save-steps",
        str(10 * steps),
        "--lr",
        "1e-4",
    ]
    started = time.perf_counter()
    done = subprocess.run(
        cmd,
        env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"fine-tuning failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    final = next(
        ast.literal_eval(line[line.index("{") :])
        for line in (done.stdout + done.stderr).splitlines()[::-1]
        if "'train_samples_per_second'" in line
    )
    return TrainBench(
        processes=processes,
        steps=steps,
        samples_per_s=float(final["train_samples_per_second"]),
        tokens_per_sample=tokens_per_sample,
        wall_s=wall,
    )


# --- `drivecoach bench reports`: the safety managers' report queries on a million events -----------------------
