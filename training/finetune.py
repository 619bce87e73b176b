"""Fine-tuning a Qwen2.5-VL checkpoint on an exported dataset: HF Trainer + DeepSpeed ZeRO stage 2, the paper's recipe
(vision tower and projector frozen, language model trained, lr 1e-5, 3 epochs, cosine, warmup ratio 0.1, bf16 on
GPU, sequences up to 2,048 tokens).

    torchrun --nproc_per_node 8 -m training.finetune --data DIR --model BASE --out OUT       # one node, 8 GPUs
    deepspeed --hostfile hosts -m training.finetune --data DIR --model BASE --out OUT        # many nodes
    DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 -m training.finetune ...                  # CPU, gloo (tests)

DIR is a `training.export` directory (`train.json`, `frames/`); each record's conversation is rendered by
`schemas.prompts.conversation` in `--prompt-version` (default `cot-v2`: the clip's telemetry summarised in turn 1,
as the worker asks), which `drivecoach.json` records so engines ask the model as it learned. A run that stops can be started again with the same
command: it resumes from the newest checkpoint in OUT. OUT ends up holding the model, the processor and
`drivecoach.json` (base, data manifest, recipe), so `model_version_of(OUT)` names it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from schemas.generation import is_demo_model, prompt_version_of
from schemas.model_io import build_inputs, install_torchvision_shim, load_model, load_processor
from schemas.prompts import PROMPT_VERSION, PROMPT_VERSIONS, Prompt, conversation
from training.options import (
    CutoffLen,
    Epochs,
    GradAccum,
    Lr,
    MaxSteps,
    PromptVersion,
    SaveSteps,
    Scheduler,
    Seed,
    WarmupRatio,
    command_app,
    configure_logging,
    fail,
)
from training.sft import ASSISTANT_HEADER, END_OF_TURN, Record, assistant_labels, load_records

log = logging.getLogger("training.finetune")
DS_CONFIG = Path(__file__).with_name("ds_zero2.json")


@dataclass(frozen=True)
class Recipe:
    lr: float = 1e-5
    epochs: float = 3.0
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    cutoff_len: int = 2048
    grad_accum: int = 1
    save_steps: int = 50
    seed: int = 0
    max_steps: int = -1  # > 0 overrides epochs (tests)
    prompt_version: str = PROMPT_VERSION  # the prompt the records are rendered in (schemas.prompts)

    def __post_init__(self) -> None:
        Prompt(self.prompt_version)  # an unknown version fails before a process is launched


class ClipDataset:
    """Each item: one clip's whole two-turn conversation, labels only on the assistant answers."""

    def __init__(
        self, data: Path, index: str, processor: Any, cutoff_len: int, prompt_version: str = PROMPT_VERSION
    ) -> None:
        self.processor = processor
        self.prompt_version = prompt_version
        tok = processor.tokenizer
        self.header = tok.encode(ASSISTANT_HEADER, add_special_tokens=False)
        self.end = tok.convert_tokens_to_ids(END_OF_TURN)
        self.items = []
        for record in load_records(data, index=index):
            inputs = self._encode(record)
            if inputs["input_ids"].shape[-1] > cutoff_len:
                log.warning(
                    "%s: %d tokens > cutoff %d, left out",
                    record.id,
                    inputs["input_ids"].shape[-1],
                    cutoff_len,
                )
                continue
            self.items.append(record)
        if not self.items:
            raise ValueError(f"no example of {data / index} fits in {cutoff_len} tokens")

    def _encode(self, record: Record) -> dict[str, Any]:
        with np.load(record.frames) as data:
            frames = data["frames"]
        messages = conversation(record.turn1, record.turn2, prompt=record.prompt(self.prompt_version))
        inputs = build_inputs(self.processor, messages, frames, add_generation_prompt=False)
        return dict(inputs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        inputs = self._encode(self.items[i])
        inputs["labels"] = assistant_labels(inputs["input_ids"][0], self.header, self.end).unsqueeze(0)
        return inputs


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches of one clip (videos differ in length); more examples per step come from gradient accumulation."""
    if len(batch) != 1:
        raise ValueError("per-device batch size must be 1")
    return batch[0]


def finetune(data: Path, model_path: Path, out: Path, recipe: Recipe, *, index: str = "train.json") -> Path:
    install_torchvision_shim()
    import torch
    from transformers import Trainer
    from transformers.trainer_utils import get_last_checkpoint

    on_gpu = torch.cuda.is_available()
    processor = load_processor(model_path)
    model = load_model(model_path, train=True)
    for p in (
        model.model.visual.parameters()
    ):  # vision tower and its merger (the projector): frozen, as in the paper
        p.requires_grad_(False)
    dataset = ClipDataset(data, index, processor, recipe.cutoff_len, recipe.prompt_version)
    args = training_arguments(recipe, out, on_gpu=on_gpu)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    if trainer.is_world_process_zero():
        trainer.save_model(str(out))
        processor.save_pretrained(str(out))
        write_model_card(out, data=data, model_path=model_path, recipe=recipe, result=result)
    return out


def training_arguments(recipe: Recipe, out: Path, *, on_gpu: bool) -> Any:
    """The HF Trainer's arguments for the recipe: ZeRO-2, batches of one clip, checkpoints in OUT/checkpoints."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.lr,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup_ratio,  # <1: a ratio
        bf16=on_gpu,
        use_cpu=not on_gpu,
        ddp_backend=None if on_gpu else "gloo",
        deepspeed=str(DS_CONFIG),
        logging_steps=5,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=2,
        seed=recipe.seed,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def write_model_card(out: Path, *, data: Path, model_path: Path, recipe: Recipe, result: Any) -> None:
    """`OUT/drivecoach.json`: base, data manifest, recipe and the run's outcome (what `model_version_of` names)."""
    manifest = json.loads((data / "manifest.json").read_text()) if (data / "manifest.json").is_file() else {}
    (out / "drivecoach.json").write_text(
        json.dumps(
            {
                "base": str(model_path),
                "prompt_version": recipe.prompt_version,
                "recipe": asdict(recipe),
                "data": {
                    "dir": str(data),
                    "hashes": manifest.get("hashes", {}),
                    "cutoff": manifest.get("cutoff"),
                },
                "train_loss": result.training_loss,
                "steps": result.global_step,
                "demo": is_demo_model(model_path),
                "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            },
            indent=1,
        )
    )


def mean_loss(model_path: Path, data: Path, index: str = "eval.json") -> float:
    """Mean loss per answer token of a checkpoint on a dataset split (what fine-tuning lowers), asked in the prompt
    version the checkpoint names."""
    install_torchvision_shim()
    import torch

    processor = load_processor(model_path)
    model = load_model(model_path)
    dataset = ClipDataset(
        data, index, processor, cutoff_len=10**9, prompt_version=prompt_version_of(model_path)
    )
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for i in range(len(dataset)):
            item = dataset[i]
            n = int((item["labels"][:, 1:] != -100).sum())
            total += float(model(**item).loss) * n
            tokens += n
    return total / tokens


RECIPE = Recipe()
app = command_app(__doc__.split("\n\n")[0])


@app.command()
def finetune_command(
    data: Annotated[Path, typer.Option(help="a `training.export` directory (train.json, frames/)")],
    model: Annotated[Path, typer.Option(help="base checkpoint (the production model)")],
    out: Annotated[Path, typer.Option(help="where the model, its processor and checkpoints go")],
    index: Annotated[str, typer.Option(help="the records file in --data to train on")] = "train.json",
    lr: Lr = RECIPE.lr,
    epochs: Epochs = RECIPE.epochs,
    warmup_ratio: WarmupRatio = RECIPE.warmup_ratio,
    scheduler: Scheduler = RECIPE.scheduler,
    cutoff_len: CutoffLen = RECIPE.cutoff_len,
    grad_accum: GradAccum = RECIPE.grad_accum,
    save_steps: SaveSteps = RECIPE.save_steps,
    seed: Seed = RECIPE.seed,
    max_steps: MaxSteps = RECIPE.max_steps,
    prompt_version: PromptVersion = RECIPE.prompt_version,
    local_rank: Annotated[
        int, typer.Option("--local_rank", "--local-rank", hidden=True, help="set by deepspeed; unused")
    ] = -1,
) -> None:
    """Fine-tune --model on the --data directory's train split with ZeRO-2; the same command again resumes."""
    configure_logging()
    if prompt_version not in PROMPT_VERSIONS:
        fail(f"prompt_version: one of {', '.join(PROMPT_VERSIONS)}")
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
        prompt_version=prompt_version,
    )
    finetune(data, model, out, recipe, index=index)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="python -m training.finetune")


if __name__ == "__main__":
    main()
