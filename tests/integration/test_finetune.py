"""Fine-tuning with DeepSpeed ZeRO-2 on CPU, two processes under torchrun: the model learns (its loss on the data
falls), the vision tower stays frozen, the result loads and names itself, and a second run resumes from the newest
checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from schemas.generation import TransformersEngine
from streams.demo import write_training_set
from streams.inference.engines.base import model_version_of
from streams.settings import Settings
from streams.simulate import make_scenarios
from training.finetune import mean_loss

pytestmark = pytest.mark.integration
import deepspeed  # noqa: E402, F401 - `make test` installs the train extra: a missing or broken one must fail


def _torchrun(data: Path, model: Path, out: Path, steps: int, log: Path) -> None:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "training.finetune",
        "--data",
        str(data),
        "--index",
        "data.json",
        "--model",
        str(model),
        "--out",
        str(out),
        "--max-steps",
        str(steps),
        "--save-steps",
        "4",
        "--lr",
        "1e-3",
        "--warmup-ratio",
        "0.0",
    ]
    with open(log, "wb") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False)
    assert done.returncode == 0, log.read_text()[-3000:]


def test_zero2_on_two_processes_learns_saves_and_resumes(trained_tiny_model: Path, tmp_path: Path) -> None:
    data = write_training_set(
        make_scenarios(901, 4, fleet_id="f", vehicles=2, duration=10.0),
        tmp_path / "data",
        Settings(home=tmp_path, max_pixels=4704),
    )
    out = tmp_path / "out"
    _torchrun(data, trained_tiny_model, out, 8, tmp_path / "first.log")
    meta = json.loads((out / "drivecoach.json").read_text())
    assert (meta["steps"], meta["world_size"], meta["recipe"]["max_steps"]) == (8, 2, 8)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]
    assert mean_loss(out, data, "data.json") < mean_loss(trained_tiny_model, data, "data.json")
    before, after = load_file(trained_tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    visual = [k for k in before if ".visual." in k or k.startswith("visual.")]
    assert visual and all((before[k] == after[k]).all() for k in visual)  # frozen: vision tower and projector
    assert any(
        not (before[k] == after[k]).all() for k in before if k not in visual
    )  # the language model trained
    assert model_version_of(out) != model_version_of(trained_tiny_model)
    assert TransformersEngine(out, max_new_tokens=4).model_version == model_version_of(out)

    _torchrun(data, trained_tiny_model, out, 12, tmp_path / "second.log")
    assert "resuming from" in (tmp_path / "second.log").read_text()
    assert json.loads((out / "drivecoach.json").read_text())["steps"] == 12


def test_train_bench_reports_throughput_from_a_real_run(tmp_path: Path) -> None:
    from streams.bench.train import bench_train

    result = bench_train(Settings(home=tmp_path, max_pixels=4704), tmp_path, steps=4, processes=1, clips=4)
    assert result.samples_per_s > 0 and result.tokens_per_sample > 100 and result.wall_s > 0
    # 4 steps of one sample each (1 process, per-device batch 1, no accumulation): the Trainer's figure covers its
    # loop, which lies inside the whole launch, so it is at least the samples over the wall time.
    assert result.samples_per_s >= 4 / result.wall_s
    # Every sample is a clip's video tokens and both turns: far more than 100 tokens.
    assert result.tokens_per_s > 100 * result.samples_per_s


def test_the_deepspeed_launcher_runs_the_same_entry_point(trained_tiny_model: Path, tmp_path: Path) -> None:
    """What `drivecoach retrain --launcher deepspeed` starts (with --hostfile on many nodes), here on 2 CPU ranks."""
    from training.finetune import Recipe
    from training.retrain import RetrainJob, launch_command

    data = write_training_set(
        make_scenarios(902, 2, fleet_id="f", vehicles=2, duration=10.0),
        tmp_path / "data",
        Settings(home=tmp_path, max_pixels=4704),
    )
    (data / "train.json").write_text((data / "data.json").read_text())
    job = RetrainJob(launcher="deepspeed", nproc=2, recipe=Recipe(max_steps=2, save_steps=10))
    cmd = launch_command(job, data, str(trained_tiny_model), tmp_path / "out")
    assert cmd[0].endswith("deepspeed") and cmd[1:5] == ["--num_gpus", "2", "--module", "training.finetune"]
    done = subprocess.run(
        cmd,
        env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    meta = json.loads((tmp_path / "out" / "drivecoach.json").read_text())
    assert (meta["steps"], meta["world_size"]) == (2, 2)
