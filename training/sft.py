"""Supervised fine-tuning of a Qwen2.5-VL on two-turn chain-of-thought records: a recipe to read top to bottom.

Command (2 CPU cores; the DEMO model from random weights, ~200 clips of 40 frames at 112x140):
    python -m training.sft --data DATA_DIR --out OUT_DIR [--model BASE_DIR] --steps 900 --lr 3e-3 --seed 0

`DATA_DIR/data.json` is a list of {"id", "vehicle_id", "frames": "relative/path.npz", "turn1", "turn2",
"telemetry"}; `np.load(path)["frames"]` is (T, H, W, 3) uint8 RGB at 2 FPS, sides multiples of 28; `telemetry` (optional,
[] if absent) the clip's samples (`schemas.messages.TelemetrySample`, t in seconds from the clip start). Without
`--model` a fresh tiny DEMO Qwen2.5-VL (training.tiny_model) is built first, its tokenizer trained on the dataset's
answers and turn-1 questions too.

Each step is one clip (batch size 1): the whole conversation (system, video + turn-1 question, turn-1 answer,
turn-2 question, turn-2 answer), rendered by `schemas.prompts.conversation` in `--prompt-version` (default
`cot-v2`: the clip's motion summary in turn 1, as the worker asks), goes through the model, and the loss covers only the two assistant answers and
their <|im_end|> (everything else is -100). AdamW, linear warmup then cosine decay, gradient clipping.
The output directory holds the model, the processor and `drivecoach.json` (base, prompt version, steps, final loss,
data hash); engines ask a checkpoint in the prompt version it names (`schemas.generation.prompt_version_of`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from schemas.messages import TelemetrySample
from schemas.model_io import build_inputs, install_torchvision_shim, load_model, load_processor
from schemas.prompts import PROMPT_VERSION, InvalidAnswer, Prompt, conversation, parse_turn1
from schemas.taxonomy import EventType
from training.options import PromptVersion, Seed, command_app, fail

IGNORE_INDEX = -100
ASSISTANT_HEADER = "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"


class SFTConfigError(ValueError):
    """The fine-tuning options or the dataset do not fit together."""


@dataclass(frozen=True)
class SFTConfig:
    data: Path
    out: Path
    model: Path | None = None  # None: build a fresh tiny DEMO model (random weights) first
    steps: int | None = None  # exactly one of steps / epochs
    epochs: float | None = None
    lr: float = 2e-3  # peak; a random-init tiny model needs ~1e-3..3e-3, a pretrained one ~1e-5
    warmup_steps: int | None = None  # None: 5% of the steps (at least 10)
    min_lr_ratio: float = 0.05  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    freeze_vision: bool = False  # the paper's recipe freezes it; the from-scratch DEMO model must train it
    vision_lr_scale: float = 1.0  # the vision tower's lr = lr * this
    # Weight of a training-only event-detection loss on the vision features (a linear head per temporal patch,
    # discarded after training). None: 1.0 for a fresh DEMO model, whose random vision tower otherwise never learns
    # to see the events (measured: without it the answers ignore the video), 0.0 for a given base checkpoint.
    event_aux_weight: float | None = None
    # Vision warm-up: steps that train only the vision tower + event head before the whole model trains.
    # None: 1000 for a fresh DEMO model (a random-init language model ignores video it cannot yet read), 0 with
    # --model. Measured here: without it the demo model answered the same for every clip.
    vision_warmup_steps: int | None = None
    vision_warmup_lr: float = 3e-3
    # After the vision warm-up the vision tower stays as it is (the paper freezes it too): each clip's video
    # features are computed once and only the language model trains, 30 % less time per step (measured: 0.041 ->
    # 0.029 s on one core). The event head then has nothing left to teach, so the event loss stops with the warm-up.
    freeze_vision_after_warmup: bool = False
    # The same from this fine-tuning step on: by then the vision tower has trained beside the language model, which
    # the warm-up alone does not give it (measured: frozen after the warm-up, one seed in four learned its world).
    freeze_vision_at_step: int | None = None
    seed: int = 0
    log_every: int = 10
    # None: 1 for a fresh DEMO model (measured on 2 cores: 0.14 s/step with 1 thread, 0.13 with 2 on an idle machine,
    # but 0.8-1.4 s/step with 2 when another process holds a core), every core this process may use otherwise.
    threads: int | None = None
    progress: bool = True
    prompt_version: str = PROMPT_VERSION  # the prompt the records are rendered in (schemas.prompts)


@dataclass(frozen=True)
class Record:
    id: str
    vehicle_id: str
    frames: Path
    turn1: str
    turn2: str
    telemetry: tuple[TelemetrySample, ...] = ()  # t from the clip start; (): none

    def prompt(self, version: str = PROMPT_VERSION) -> Prompt:
        """The clip's prompt in `version`: its motion summary in turn 1 from cot-v2 on."""
        return Prompt.for_clip(self.telemetry, version)


def load_records(data_dir: Path, index: str = "data.json") -> list[Record]:
    """`data_dir/index` (a list of records; `training.export` writes train.json and eval.json)."""
    index_path = data_dir / index
    if not index_path.is_file():
        raise SFTConfigError(f"{index_path} does not exist")
    raw = json.loads(index_path.read_text())
    if not isinstance(raw, list) or not raw:
        raise SFTConfigError(f"{index_path} must be a non-empty list of records")
    records = [
        Record(
            id=r["id"],
            vehicle_id=r["vehicle_id"],
            frames=data_dir / r["frames"],
            turn1=r["turn1"],
            turn2=r["turn2"],
            telemetry=tuple(TelemetrySample.model_validate(s) for s in r.get("telemetry") or ()),
        )
        for r in raw
    ]
    missing = [str(r.frames) for r in records if not r.frames.is_file()]
    if missing:
        raise SFTConfigError(f"{len(missing)} frame files are missing, e.g. {missing[0]}")
    return records


def data_hash(data_dir: Path, records: list[Record]) -> str:
    """sha256 over data.json and every frames file, so a model names exactly what it was trained on."""
    h = hashlib.sha256((data_dir / "data.json").read_bytes())
    for r in records:
        h.update(r.frames.read_bytes())
    return h.hexdigest()


def assistant_labels(input_ids: Any, header_ids: list[int], end_id: int) -> Any:
    """Labels = input_ids on the assistant answers (each through its <|im_end|>), IGNORE_INDEX elsewhere."""
    import torch

    ids = input_ids.tolist()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    n, i = len(header_ids), 0
    while i + n <= len(ids):
        if ids[i : i + n] != header_ids:
            i += 1
            continue
        start = end = i + n
        while end < len(ids) and ids[end] != end_id:
            end += 1
        labels[start : end + 1] = input_ids[start : end + 1]
        i = end + 1
    return labels


def event_targets(turn1: str, grid_t: int, seconds_per_patch: float) -> Any:
    """(grid_t, event types) multi-hot: which events are under way in each temporal patch; None if unparsable."""
    import torch

    try:
        answer = parse_turn1(turn1)
    except InvalidAnswer:
        return None
    types = list(EventType)
    target = torch.zeros(grid_t, len(types))
    for e in answer.events:
        for t in range(grid_t):
            if e.start - 0.5 <= (t + 0.5) * seconds_per_patch <= e.end + 0.5:  # answers give whole seconds
                target[t, types.index(e.type)] = 1.0
    return target


def patch_embed_as_matmul(patch_embed: Any) -> None:
    """Run Qwen2.5-VL's patch embedding, a Conv3d whose kernel is its stride and the whole input patch, as the
    matrix product it is (vLLM does the same): the same weights and result, but oneDNN's 3-D convolution took 10 %
    of a DEMO fine-tuning step (forward and backward: 4.5 of 46 ms)."""
    import torch

    def forward(hidden_states: Any) -> Any:
        weight = patch_embed.proj.weight  # (embed_dim, channels, temporal patch, patch, patch)
        return torch.nn.functional.linear(hidden_states.to(weight.dtype), weight.view(weight.shape[0], -1))

    patch_embed.forward = forward


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class SFTRecipe:
    """setup() -> train() -> save(); read top to bottom."""

    def __init__(self, cfg: SFTConfig) -> None:
        if (cfg.steps is None) == (cfg.epochs is None):
            raise SFTConfigError("give exactly one of steps and epochs")
        if (cfg.steps is not None and cfg.steps < 1) or (cfg.epochs is not None and cfg.epochs <= 0):
            raise SFTConfigError("steps / epochs must be positive")
        if cfg.lr <= 0 or not 0 <= cfg.min_lr_ratio <= 1 or cfg.log_every < 1:
            raise SFTConfigError("lr must be > 0, min_lr_ratio in [0, 1], log_every >= 1")
        if (cfg.event_aux_weight is not None and cfg.event_aux_weight < 0) or cfg.vision_lr_scale < 0:
            raise SFTConfigError("event_aux_weight and vision_lr_scale must be >= 0")
        if cfg.model is not None and not (cfg.model / "config.json").is_file():
            raise SFTConfigError(f"{cfg.model} is not a model directory (no config.json)")
        try:
            Prompt(cfg.prompt_version)
        except ValueError as err:
            raise SFTConfigError(str(err)) from err
        self.cfg = cfg
        self.records = load_records(cfg.data)
        if cfg.steps is not None:
            self.total_steps = cfg.steps
        else:
            assert cfg.epochs is not None  # exactly one of them (checked above)
            self.total_steps = math.ceil(cfg.epochs * len(self.records))
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(10, self.total_steps // 20)
        self.warmup = min(self.warmup, self.total_steps)
        self.aux_weight = (
            cfg.event_aux_weight if cfg.event_aux_weight is not None else (1.0 if cfg.model is None else 0.0)
        )
        fresh_default = 1000 if cfg.model is None else 0
        self.vision_warmup = cfg.vision_warmup_steps if cfg.vision_warmup_steps is not None else fresh_default
        if self.vision_warmup < 0 or (self.vision_warmup and (self.aux_weight == 0 or cfg.freeze_vision)):
            raise SFTConfigError(
                "vision warm-up needs steps >= 0, the event aux loss on and the vision tower trainable"
            )
        at = cfg.freeze_vision_at_step
        if at is not None and (
            not 0 < at < self.total_steps or cfg.freeze_vision or cfg.freeze_vision_after_warmup
        ):
            raise SFTConfigError(
                "freezing the vision tower at a step needs a step inside the run and a vision tower still training"
            )
        if cfg.freeze_vision_after_warmup and not self.vision_warmup:
            raise SFTConfigError("freezing the vision tower after the warm-up needs a vision warm-up")
        self.losses: list[float] = []
        self.warmup_event_loss: float | None = None  # the mean over the warm-up's last logged window
        self._batches: dict[int, dict[str, Any]] = {}
        self._every_core = False  # set by use_every_core(), acted on at the next step
        self.seconds_per_step = 0.0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def use_every_core(self) -> None:
        """From the next step on, train on every core this process may use. Safe in a signal handler (it only sets
        a flag): `drivecoach demo` sends SIGUSR1 to the seed it keeps when it stops the others."""
        self._every_core = True

    # -- setup -------------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print(message, flush=True)

    def setup(self) -> None:
        install_torchvision_shim()
        import torch

        cfg = self.cfg
        started = time.perf_counter()
        torch.set_num_threads(cfg.threads or (1 if cfg.model is None else len(os.sched_getaffinity(0))))
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        self.base_path, self.base_name = self.base_model()
        self.log(
            f"sft: base {self.base_name} ({time.perf_counter() - started:.1f} s), {len(self.records)} records, "
            f"{self.total_steps} steps, lr {cfg.lr:g}, event aux weight {self.aux_weight:g}"
        )
        self.processor = load_processor(self.base_path)
        self.model = load_model(self.base_path, train=True)
        if cfg.freeze_vision:
            for p in self.model.model.visual.parameters():
                p.requires_grad_(False)
        patch_embed_as_matmul(self.model.model.visual.patch_embed)

        tok = self.processor.tokenizer
        self.header_ids = tok(ASSISTANT_HEADER, add_special_tokens=False)["input_ids"]
        self.end_id = tok.convert_tokens_to_ids(END_OF_TURN)

        self.aux_head = None
        if self.aux_weight > 0:
            vision_config: Any = self.model.config.vision_config
            self.aux_head = torch.nn.Linear(vision_config.out_hidden_size, len(EventType))
            self._visual_out: list[Any] = []
            self.model.model.visual.register_forward_hook(
                lambda _m, _i, out: self._visual_out.append(out.pooler_output)
            )
        self.optimizer = torch.optim.AdamW(
            self.param_groups(), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_lambda(s, warmup=self.warmup, total=self.total_steps, min_ratio=cfg.min_lr_ratio),
        )
        self.data_sha256 = data_hash(cfg.data, self.records)
        params = sum(p.numel() for p in self.model.parameters())
        self.log(f"sft: {params:,} parameters, setup {time.perf_counter() - started:.1f} s")

    def base_model(self) -> tuple[Path, str]:
        """(path, name) of the base checkpoint: the given one, or a fresh tiny DEMO model built here."""
        cfg = self.cfg
        if cfg.model is not None:
            return cfg.model, str(cfg.model.resolve())
        from training.tiny_model import build_tiny_model

        self._tmp = tempfile.TemporaryDirectory(prefix="drivecoach-base-")
        # The answers and each clip's own turn 1 (its motion summary): the tokenizer learns the words it will read.
        version = cfg.prompt_version
        corpus = [t for r in self.records for t in (r.turn1, r.turn2, r.prompt(version).turn1)]
        path = build_tiny_model(Path(self._tmp.name), corpus=corpus, seed=cfg.seed)
        return path, f"tiny-qwen2.5-vl-random-init(seed={cfg.seed})"

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: language model and vision tower (its own lr scale), each with and without weight decay
        (norms and biases have none), and the event head."""
        cfg = self.cfg
        visual = {id(p) for p in self.model.model.visual.parameters()}
        groups = []
        for is_visual in (False, True):
            params = [
                p for p in self.model.parameters() if p.requires_grad and (id(p) in visual) == is_visual
            ]
            lr = cfg.lr * (cfg.vision_lr_scale if is_visual else 1.0)
            groups.append(
                {"params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": cfg.weight_decay}
            )
            groups.append({"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
        if self.aux_head is not None:
            groups.append({"params": list(self.aux_head.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    def batch(self, record: Record) -> dict[str, Any]:
        """One clip's full two-turn conversation as model tensors, labels on the assistant answers only."""
        frames = np.load(record.frames)["frames"]
        inputs: dict[str, Any] = dict(
            build_inputs(
                self.processor,
                conversation(record.turn1, record.turn2, prompt=record.prompt(self.cfg.prompt_version)),
                frames,
                add_generation_prompt=False,
            )
        )
        inputs["labels"] = assistant_labels(inputs["input_ids"][0], self.header_ids, self.end_id)[None]
        return inputs

    def cached_batch(self, idx: int) -> dict[str, Any]:
        """`batch` of record `idx`, built once: each clip comes back every epoch, and building it (loading the
        frames, the processor, the labels) was 8 % of a step (measured: 3.5 of 44 ms at 56 x 84; about 1 MB a clip)."""
        if idx not in self._batches:
            self._batches[idx] = self.batch(self.records[idx])
        return self._batches[idx]

    def event_loss(self, record: Record, batch: dict[str, Any]) -> Any:
        import torch

        head = self.aux_head
        assert head is not None  # the event loss is on (aux_weight > 0)
        feats = self._visual_out.pop()
        self._visual_out.clear()
        grid_t = int(batch["video_grid_thw"][0, 0])
        target = event_targets(record.turn1, grid_t, float(batch["second_per_grid_ts"][0]))
        if target is None:
            return feats.sum() * 0.0
        # Mean pooling, not max: a freshly initialised language model attends almost uniformly, i.e. it sees
        # the mean of the video tokens, so the events must be readable from that mean for it to learn to use them.
        # Per time slice the strongest token decides (a phone covers a few patches); and the events must also be
        # readable from the mean of all video tokens, because that is what a freshly initialised language model
        # sees (its attention is near uniform), so it has a signal to learn to use the video from.
        per_slice = head(feats).view(grid_t, -1, len(EventType)).amax(dim=1)
        whole = head(feats.mean(dim=0, keepdim=True))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(per_slice, target) + bce(whole, target.amax(dim=0, keepdim=True))

    def warm_up_vision(self) -> None:
        """Train the vision tower and the event head alone first (cheap: no language model forward)."""
        import torch

        cfg = self.cfg
        visual = self.model.model.visual
        assert self.aux_head is not None  # a vision warm-up needs the event loss (checked in __init__)
        params = [*visual.parameters(), *self.aux_head.parameters()]
        optimizer = torch.optim.AdamW(params, lr=cfg.vision_warmup_lr, weight_decay=0.0, fused=True)
        rng = random.Random(cfg.seed + 1)
        started, window = time.perf_counter(), []
        for step in range(1, self.vision_warmup + 1):
            idx = rng.randrange(len(self.records))
            record = self.records[idx]
            batch = self.cached_batch(idx)
            visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
            loss = self.event_loss(record, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.item())
            if step % cfg.log_every == 0 or step == self.vision_warmup:
                per_step = (time.perf_counter() - started) / step
                self.warmup_event_loss = sum(window) / len(window)
                print(
                    f"vision warm-up {step}/{self.vision_warmup}  event loss {self.warmup_event_loss:.4f}  "
                    f"{per_step:.3f} s/step",
                    flush=True,
                )
                window = []

    def frozen_vision_inputs(self) -> list[dict[str, Any]]:
        """Freeze the vision tower (if --freeze-vision has not) and compute, once per clip, what the language model
        needs: its video features and the 3-D rotary positions (HF's forward would recompute both every step)."""
        import torch

        started = time.perf_counter()
        model = self.model.model
        for p in model.visual.parameters():
            p.requires_grad_(False)
        inputs = []
        with torch.no_grad():
            for idx in range(len(self.records)):
                b = self.cached_batch(idx)
                features = model.get_video_features(
                    b["pixel_values_videos"], b["video_grid_thw"]
                ).pooler_output
                positions, _ = model.get_rope_index(
                    b["input_ids"],
                    b["mm_token_type_ids"],
                    None,
                    b["video_grid_thw"],
                    b["second_per_grid_ts"],
                    b["attention_mask"],
                )
                inputs.append(
                    {
                        "input_ids": b["input_ids"],
                        "attention_mask": b["attention_mask"],
                        "position_ids": positions,
                        "labels": b["labels"],
                        "video_features": torch.cat(features),
                    }
                )
        self._batches.clear()  # the frames are not needed any more: only these features are
        if self.aux_head is not None:
            self._visual_out.clear()  # the event head's hook saw these forwards; nothing trains it any more
        self.log(
            f"vision frozen: {len(inputs)} clips' video features computed ({time.perf_counter() - started:.1f} s)"
        )
        return inputs

    def answer_loss(self, labels: Any, **model_inputs: Any) -> Any:
        """The model's loss on the answer tokens (HF's causal-LM loss: the mean over the labelled next tokens), with
        logits computed only at the positions that predict one. A quarter of a clip's positions do; the LM head over
        the 3,072-token vocabulary was the largest matrix product of a step."""
        import torch

        targets = labels[0, 1:]
        keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
        logits = self.model(**model_inputs, logits_to_keep=keep).logits[0]
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])

    def language_loss(self, inputs: dict[str, Any]) -> Any:
        """The model's loss with the clip's video features given: its token embeddings with the features in the
        video tokens' places, as the model's forward places them."""
        ids = inputs["input_ids"]
        embeds = self.model.get_input_embeddings()(ids)
        video = (ids == self.model.config.video_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(video, inputs["video_features"].to(embeds.dtype))
        return self.answer_loss(
            inputs["labels"],
            inputs_embeds=embeds,
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
        )

    def order(self) -> list[int]:
        """Record indices for every step: a fresh seeded shuffle per epoch."""
        rng = random.Random(self.cfg.seed)
        out: list[int] = []
        while len(out) < self.total_steps:
            epoch = list(range(len(self.records)))
            rng.shuffle(epoch)
            out += epoch
        return out[: self.total_steps]

    # -- train -------------------------------------------------------------------------------------------------
    def train(self) -> None:
        import torch
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        cfg = self.cfg
        self.model.train()
        if self.vision_warmup:
            self.warm_up_vision()
        frozen = self.frozen_vision_inputs() if cfg.freeze_vision or cfg.freeze_vision_after_warmup else None
        window: list[float] = []
        started = time.perf_counter()
        # A live bar only on a terminal; elsewhere (logs, CI, a parent process's pipe) rich would print nothing
        # until the end, so plain lines are printed instead.
        bar = cfg.progress and Console().is_terminal
        with Progress(
            TextColumn("sft"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not bar,
        ) as progress:
            task = progress.add_task("sft", total=self.total_steps, info="")
            for step, idx in enumerate(self.order(), start=1):
                if step - 1 == cfg.freeze_vision_at_step:
                    frozen = self.frozen_vision_inputs()
                if self._every_core:
                    self._every_core = False
                    torch.set_num_threads(len(os.sched_getaffinity(0)))
                    self.log(f"sft: {torch.get_num_threads()} threads from step {step} on")
                if frozen is not None:
                    loss = self.language_loss(frozen[idx])
                else:
                    batch = self.cached_batch(idx)
                    loss = self.answer_loss(**batch)
                    if self.aux_head is not None:
                        loss = loss + self.aux_weight * self.event_loss(self.records[idx], batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)

                window.append(loss.item())
                self.losses.append(window[-1])
                if step % cfg.log_every == 0 or step == self.total_steps:
                    per_step = (time.perf_counter() - started) / step
                    info = (
                        f"loss {sum(window) / len(window):.4f}  lr {self.scheduler.get_last_lr()[0]:.2e}  "
                        f"{per_step:.3f} s/step"
                    )
                    progress.update(task, info=info)
                    if not bar:
                        print(f"step {step}/{self.total_steps}  {info}", flush=True)
                    window = []
                progress.advance(task)
        self.seconds_per_step = (time.perf_counter() - started) / self.total_steps

    # -- save --------------------------------------------------------------------------------------------------
    def save(self) -> Path:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.model.eval()
        self.model.save_pretrained(cfg.out)
        self.processor.save_pretrained(cfg.out)
        readme = self.base_path / "README.md"
        if readme.is_file() and readme.resolve() != (cfg.out / "README.md").resolve():
            shutil.copyfile(readme, cfg.out / "README.md")
        tail = self.losses[-cfg.log_every :]
        base_meta = self.base_path / "tiny_model.json"
        meta = {
            "base": self.base_name,
            "demo": True,
            "prompt_version": cfg.prompt_version,
            "steps": self.total_steps,
            "final_loss": round(sum(tail) / len(tail), 6),
            "vision_warmup_event_loss": self.warmup_event_loss,
            "seconds_per_step": round(self.seconds_per_step, 4),
            "event_aux_weight": self.aux_weight,
            "vision_warmup_steps": self.vision_warmup,
            "data_sha256": self.data_sha256,
            "records": len(self.records),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "base_recipe": json.loads(base_meta.read_text()) if base_meta.is_file() else None,
        }
        # Written last: its presence marks a complete checkpoint.
        (cfg.out / "drivecoach.json").write_text(json.dumps(meta, indent=1) + "\n")
        return cfg.out

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def run_sft(cfg: SFTConfig) -> Path:
    """Fine-tune and save; returns the output directory."""
    return run_recipe(SFTRecipe(cfg))


def run_recipe(recipe: SFTRecipe) -> Path:
    try:
        recipe.setup()
        recipe.train()
        return recipe.save()
    finally:
        recipe.cleanup()


DEFAULT_STEPS = 900  # without --steps and --epochs
app = command_app("Supervised fine-tuning of a Qwen2.5-VL on two-turn CoT records.")

# The command's flags, one per SFTConfig field (their defaults are SFTConfig's).
Data = Annotated[Path, typer.Option(help="dataset directory holding data.json")]
Out = Annotated[Path, typer.Option(help="where the fine-tuned model goes")]
BaseCheckpoint = Annotated[Path | None, typer.Option(help="base checkpoint; omit to build a tiny DEMO one")]
Steps = Annotated[int | None, typer.Option(help=f"optimizer steps (one clip each); default {DEFAULT_STEPS}")]
Epochs = Annotated[float | None, typer.Option(help="passes over the data, instead of --steps")]
Lr = Annotated[float, typer.Option(help="peak learning rate")]
WarmupSteps = Annotated[
    int | None, typer.Option(help="linear warm-up steps (default: 5% of the steps, at least 10)")
]
MinLrRatio = Annotated[float, typer.Option(help="the cosine ends at lr * this")]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay")]
FreezeVision = Annotated[bool, typer.Option("--freeze-vision", help="train the language model only")]
FreezeVisionAfterWarmup = Annotated[
    bool,
    typer.Option(
        "--freeze-vision-after-warmup",
        help="the vision tower trains in the warm-up only (then 30 % faster steps)",
    ),
]
FreezeVisionAtStep = Annotated[
    int | None,
    typer.Option(help="the vision tower trains up to this fine-tuning step, then only the language model"),
]
VisionLrScale = Annotated[float, typer.Option(help="the vision tower's lr = lr * this")]
EventAuxWeight = Annotated[
    float | None,
    typer.Option(
        help="training-only event-detection loss on the vision features (default: 1 without --model)"
    ),
]
VisionWarmupSteps = Annotated[
    int | None,
    typer.Option(help="vision tower + event head alone first (default: 1000 without --model, else 0)"),
]
VisionWarmupLr = Annotated[float, typer.Option(help="learning rate of the vision warm-up")]
LogEvery = Annotated[int, typer.Option(help="steps between loss lines")]
Threads = Annotated[
    int | None, typer.Option(help="torch threads (default: 1 for the DEMO model, else every core)")
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="plain log lines instead of a progress bar")]


@app.command()
def sft_command(
    data: Data,
    out: Out,
    model: BaseCheckpoint = SFTConfig.model,
    steps: Steps = None,
    epochs: Epochs = None,
    lr: Lr = SFTConfig.lr,
    warmup_steps: WarmupSteps = SFTConfig.warmup_steps,
    min_lr_ratio: MinLrRatio = SFTConfig.min_lr_ratio,
    weight_decay: WeightDecay = SFTConfig.weight_decay,
    freeze_vision: FreezeVision = SFTConfig.freeze_vision,
    freeze_vision_after_warmup: FreezeVisionAfterWarmup = SFTConfig.freeze_vision_after_warmup,
    freeze_vision_at_step: FreezeVisionAtStep = SFTConfig.freeze_vision_at_step,
    vision_lr_scale: VisionLrScale = SFTConfig.vision_lr_scale,
    event_aux_weight: EventAuxWeight = SFTConfig.event_aux_weight,
    vision_warmup_steps: VisionWarmupSteps = SFTConfig.vision_warmup_steps,
    vision_warmup_lr: VisionWarmupLr = SFTConfig.vision_warmup_lr,
    seed: Seed = SFTConfig.seed,
    log_every: LogEvery = SFTConfig.log_every,
    threads: Threads = SFTConfig.threads,
    no_progress: NoProgress = False,
    prompt_version: PromptVersion = SFTConfig.prompt_version,
) -> None:
    """Fine-tune a Qwen2.5-VL (or a fresh tiny DEMO one) on --data; print the output directory."""
    cfg = SFTConfig(
        data=data,
        out=out,
        model=model,
        steps=steps if steps is not None or epochs is not None else DEFAULT_STEPS,
        epochs=epochs,
        lr=lr,
        warmup_steps=warmup_steps,
        min_lr_ratio=min_lr_ratio,
        weight_decay=weight_decay,
        freeze_vision=freeze_vision,
        freeze_vision_after_warmup=freeze_vision_after_warmup,
        freeze_vision_at_step=freeze_vision_at_step,
        vision_lr_scale=vision_lr_scale,
        event_aux_weight=event_aux_weight,
        vision_warmup_steps=vision_warmup_steps,
        vision_warmup_lr=vision_warmup_lr,
        seed=seed,
        log_every=log_every,
        threads=threads,
        progress=not no_progress,
        prompt_version=prompt_version,
    )
    try:
        recipe = SFTRecipe(cfg)
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, lambda *_: recipe.use_every_core())
        result = run_recipe(recipe)
    except SFTConfigError as err:
        fail(str(err))
    print(result)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="python -m training.sft")


if __name__ == "__main__":
    main()
