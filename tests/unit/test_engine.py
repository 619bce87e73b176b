"""build -> fine-tune -> load -> generate: the tiny DEMO model memorises a few clips and the engine replays them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schemas.generation import TransformersEngine
from schemas.messages import DetectedEvent, TelemetrySample
from schemas.model_io import build_inputs, load_processor
from schemas.prompts import Prompt, conversation, format_turn1, parse_turn1
from schemas.taxonomy import TAXONOMY, EventType, reference_instruction
from streams.inference.engines.base import CotOutput, Engine
from training.sft import (
    IGNORE_INDEX,
    SFTConfig,
    SFTConfigError,
    SFTRecipe,
    assistant_labels,
    event_targets,
    run_sft,
)
from training.tiny_model import build_tiny_model

T, H, W = 4, 56, 84
# Counted by hand, not by `video_tokens`: 4 frames / 2 per temporal patch x (56 / 28) x (84 / 28) merged patches.
VIDEO_TOKENS = 12
SAMPLES = [
    [],
    [(EventType.PHONE_USE, 1, 2)],
    [(EventType.FOLLOWING_DISTANCE, 0, 1), (EventType.DROWSINESS, 1, 2)],
    [(EventType.LANE_DEPARTURE, 0, 2)],
]


def braking(at: int) -> list[dict[str, float]]:
    """A clip's 1 Hz telemetry (as a record stores it): 60 km/h, braking at 0.5 g at `at` s."""
    return [
        TelemetrySample(t=float(t), speed_kmh=60.0, accel_ms2=-4.9 if t == at else 0.0).model_dump(
            exclude_none=True
        )
        for t in range(3)
    ]


def write_dataset(root: Path) -> Path:
    """Four clips of random but distinct frames, each with its own canonical answers; two carry telemetry (a record
    without the field, as older exports wrote them, has none)."""
    rng = np.random.default_rng(7)
    (root / "frames").mkdir(parents=True)
    records = []
    for i, spec in enumerate(SAMPLES):
        events = [DetectedEvent(type=t, view=TAXONOMY[t].view, start=s, end=e) for t, s, e in spec]
        frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
        np.savez_compressed(root / f"frames/c{i}.npz", frames=frames)
        record = {
            "id": f"c{i}",
            "vehicle_id": f"v{i}",
            "frames": f"frames/c{i}.npz",
            "turn1": format_turn1(events),
            "turn2": reference_instruction([t for t, _, _ in spec]),
        }
        if i % 2:
            record["telemetry"] = braking(at=i % 3)
        records.append(record)
    (root / "data.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    records = json.loads((dataset / "data.json").read_text())
    corpus = [r[k] for r in records for k in ("turn1", "turn2")]
    return build_tiny_model(tmp_path_factory.mktemp("base") / "tiny", corpus=corpus, seed=0)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, dataset: Path, base: Path) -> Path:
    cfg = SFTConfig(
        data=dataset,
        out=tmp_path_factory.mktemp("ft") / "model",
        model=base,
        steps=300,
        lr=3e-3,
        warmup_steps=10,
        seed=0,
        log_every=50,
        threads=2,
        progress=False,
    )
    return run_sft(cfg)


def test_labels_cover_exactly_the_two_answers_and_their_end_tokens(base: Path, dataset: Path) -> None:
    processor = load_processor(base)
    tok = processor.tokenizer
    record = json.loads((dataset / "data.json").read_text())[2]
    frames = np.load(dataset / record["frames"])["frames"]
    prompt = Prompt.for_clip([TelemetrySample.model_validate(t) for t in record.get("telemetry", [])])
    inputs = build_inputs(
        processor,
        conversation(record["turn1"], record["turn2"], prompt=prompt),
        frames,
        add_generation_prompt=False,
    )
    labels = assistant_labels(
        inputs["input_ids"][0],
        tok("<|im_start|>assistant\n")["input_ids"],
        tok.convert_tokens_to_ids("<|im_end|>"),
    )
    kept = labels[labels != IGNORE_INDEX]
    assert tok.decode(kept) == record["turn1"] + "<|im_end|>" + record["turn2"] + "<|im_end|>"
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == VIDEO_TOKENS


def test_sft_rejects_bad_options(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(SFTConfigError):
        SFTRecipe(SFTConfig(data=dataset, out=tmp_path, steps=None, epochs=None))
    with pytest.raises(SFTConfigError):
        SFTRecipe(SFTConfig(data=tmp_path, out=tmp_path, steps=1))
    with pytest.raises(SFTConfigError):
        SFTRecipe(SFTConfig(data=dataset, out=tmp_path, model=tmp_path, steps=1))
    with pytest.raises(SFTConfigError):
        SFTRecipe(SFTConfig(data=dataset, out=tmp_path, steps=1, event_aux_weight=-1.0))


def test_event_aux_loss_defaults_on_only_for_a_fresh_demo_model(
    dataset: Path, base: Path, tmp_path: Path
) -> None:
    assert SFTRecipe(SFTConfig(data=dataset, out=tmp_path, steps=1)).aux_weight == 1.0
    assert SFTRecipe(SFTConfig(data=dataset, out=tmp_path, model=base, steps=1)).aux_weight == 0.0
    assert (
        SFTRecipe(SFTConfig(data=dataset, out=tmp_path, model=base, steps=1, event_aux_weight=0.5)).aux_weight
        == 0.5
    )


def test_event_targets_mark_the_patches_an_event_spans() -> None:
    turn1 = format_turn1(
        [DetectedEvent(type=EventType.PHONE_USE, view=TAXONOMY[EventType.PHONE_USE].view, start=2, end=4)]
    )
    # Patch t's centre is t + 0.5 s; answers give whole seconds, so [start - 0.5, end + 0.5] counts: patches 1-4.
    target = event_targets(turn1, grid_t=8, seconds_per_patch=1.0)
    phone = list(EventType).index(EventType.PHONE_USE)
    assert target[:, phone].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    assert target.sum() == 4  # no other type marked
    assert event_targets(format_turn1([]), 8, 1.0).sum() == 0
    assert event_targets("not json", 8, 1.0) is None


def test_sft_with_the_event_aux_loss_trains_and_records_it(dataset: Path, base: Path, tmp_path: Path) -> None:
    cfg = SFTConfig(
        data=dataset,
        out=tmp_path / "aux",
        model=base,
        steps=4,
        event_aux_weight=1.0,
        seed=0,
        log_every=2,
        threads=2,
        progress=False,
        prompt_version="cot-v1",  # the video-only prompt, for a model to compare against cot-v2's
    )
    recipe = SFTRecipe(cfg)
    recipe.setup()
    head_before = recipe.aux_head.weight.detach().clone()
    recipe.train()
    out = recipe.save()
    assert not recipe.aux_head.weight.detach().equal(head_before)  # the head got gradients through the hook
    meta = json.loads((out / "drivecoach.json").read_text())
    assert meta["event_aux_weight"] == 1.0 and meta["steps"] == 4 and meta["prompt_version"] == "cot-v1"
    assert all(np.isfinite(recipe.losses))
    # The aux head is training-only: the saved checkpoint is a plain Qwen2.5-VL the engine loads, and asks in the
    # prompt version it learned.
    engine = TransformersEngine(out, max_new_tokens=4)
    answer = engine.run_cot(np.load(dataset / "frames/c0.npz")["frames"], braking(at=1))
    assert answer.generated_tokens > 0 and engine.prompt_version == answer.prompt_version == "cot-v1"
    with pytest.raises(SFTConfigError):
        SFTRecipe(SFTConfig(data=dataset, out=tmp_path, steps=1, prompt_version="cot-v9"))


def test_a_frozen_vision_tower_is_run_once_per_clip_and_the_language_model_learns_the_same_loss(
    dataset: Path, base: Path, tmp_path: Path
) -> None:
    """With the vision tower frozen, sft computes each clip's video features once and trains the language model on
    them: the loss is the one the model's own forward gives, and the vision weights do not move."""
    recipe = SFTRecipe(SFTConfig(data=dataset, out=tmp_path / "lm", model=base, freeze_vision=True, steps=5))
    recipe.setup()
    vision = {k: v.detach().clone() for k, v in recipe.model.model.visual.state_dict().items()}
    language = recipe.model.model.language_model.layers[0].mlp.up_proj.weight.detach().clone()
    inputs = recipe.frozen_vision_inputs()
    for record, given in zip(recipe.records, inputs, strict=True):
        assert recipe.language_loss(given).item() == pytest.approx(
            recipe.model(**recipe.batch(record)).loss.item()
        )
    recipe.train()
    assert all(v.equal(vision[k]) for k, v in recipe.model.model.visual.state_dict().items())
    assert not recipe.model.model.language_model.layers[0].mlp.up_proj.weight.detach().equal(language)


def test_the_vision_can_be_frozen_after_its_warm_up_whose_event_loss_the_card_records(
    dataset: Path, tmp_path: Path
) -> None:
    with pytest.raises(SFTConfigError, match="needs a vision warm-up"):
        SFTRecipe(
            SFTConfig(
                data=dataset,
                out=tmp_path,
                model=None,
                steps=2,
                vision_warmup_steps=0,
                freeze_vision_after_warmup=True,
            )
        )
    out = run_sft(
        SFTConfig(
            data=dataset,
            out=tmp_path / "warmed",
            steps=3,
            vision_warmup_steps=4,
            freeze_vision_after_warmup=True,
            log_every=2,
            progress=False,
        )
    )
    meta = json.loads((out / "drivecoach.json").read_text())
    assert meta["vision_warmup_steps"] == 4 and 0 < meta["vision_warmup_event_loss"] < 2
    assert meta["config"]["freeze_vision_after_warmup"] is True


def test_the_answer_loss_is_the_models_own_loss_and_the_patch_embedding_its_convolution(
    dataset: Path, base: Path, tmp_path: Path
) -> None:
    """sft computes logits only where an answer token is predicted, and runs the patch embedding's Conv3d as a
    matrix product: both give what the model's own forward gives."""
    import torch

    recipe = SFTRecipe(SFTConfig(data=dataset, out=tmp_path, model=base, steps=1))
    recipe.setup()
    for record in recipe.records:
        batch = recipe.batch(record)
        assert recipe.answer_loss(**batch).item() == pytest.approx(
            recipe.model(**batch).loss.item(), rel=1e-5
        )
    embed = recipe.model.model.visual.patch_embed
    pixels = recipe.batch(recipe.records[0])["pixel_values_videos"]
    conv = embed.proj(
        pixels.view(-1, embed.in_channels, embed.temporal_patch_size, embed.patch_size, embed.patch_size)
    ).view(-1, embed.embed_dim)
    assert torch.allclose(embed(pixels), conv, atol=1e-5)


def test_the_vision_can_be_frozen_at_a_fine_tuning_step(dataset: Path, base: Path, tmp_path: Path) -> None:
    """Up to the step the vision tower trains with the language model; from it, video features computed once."""
    for bad in (
        {"freeze_vision_at_step": 0},
        {"freeze_vision_at_step": 4},
        {"freeze_vision_at_step": 2, "freeze_vision": True},
    ):
        with pytest.raises(SFTConfigError, match="freezing the vision tower at a step"):
            SFTRecipe(SFTConfig(data=dataset, out=tmp_path, model=base, steps=4, **bad))  # type: ignore[arg-type]
    recipe = SFTRecipe(
        SFTConfig(data=dataset, out=tmp_path, model=base, steps=4, freeze_vision_at_step=2, progress=False)
    )
    lines: list[str] = []
    recipe.log = lines.append  # type: ignore[method-assign]
    recipe.setup()
    vision = [p.detach().clone() for p in recipe.model.model.visual.parameters()]
    recipe.train()
    assert any(line.startswith("vision frozen: 4 clips") for line in lines)
    assert all(not p.requires_grad for p in recipe.model.model.visual.parameters())
    assert any(not p.equal(v) for p, v in zip(recipe.model.model.visual.parameters(), vision, strict=True))
    assert len(recipe.losses) == 4 and all(np.isfinite(recipe.losses))


def test_sft_moves_to_every_core_when_told(dataset: Path, base: Path, tmp_path: Path) -> None:
    """`drivecoach demo` sends SIGUSR1 to the seed it keeps; the handler only flags it, the next step acts."""
    import os
    import signal

    import torch

    before = torch.get_num_threads()
    recipe = SFTRecipe(SFTConfig(data=dataset, out=tmp_path, model=base, steps=2, threads=1, progress=False))
    lines: list[str] = []
    recipe.log = lines.append  # type: ignore[method-assign]
    recipe.setup()
    previous = signal.signal(signal.SIGUSR1, lambda *_: recipe.use_every_core())
    try:
        assert torch.get_num_threads() == 1
        os.kill(os.getpid(), signal.SIGUSR1)
        recipe.train()
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        assert f"sft: {len(os.sched_getaffinity(0))} threads from step 1 on" in lines
    finally:
        signal.signal(signal.SIGUSR1, previous)
        torch.set_num_threads(before)


def test_sft_writes_model_processor_and_metadata(finetuned: Path, base: Path) -> None:
    meta = json.loads((finetuned / "drivecoach.json").read_text())
    assert meta["demo"] is True and meta["steps"] == 300 and meta["records"] == len(SAMPLES)
    assert meta["prompt_version"] == "cot-v2"
    assert meta["base"] == str(base.resolve()) and len(meta["data_sha256"]) == 64
    assert meta["final_loss"] < 0.05, meta  # started near ln(vocab) ~ 7
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md"):
        assert (finetuned / name).is_file(), name


def test_engine_replays_the_training_answers(finetuned: Path, dataset: Path) -> None:
    engine: Engine = TransformersEngine(finetuned, max_new_tokens=96)
    assert engine.model_version.startswith("model-") and len(engine.model_version) == len("model-") + 8
    records = json.loads((dataset / "data.json").read_text())
    telemetry = [[TelemetrySample.model_validate(t) for t in r.get("telemetry", [])] for r in records]
    for record, samples in zip(records, telemetry, strict=True):
        frames = np.load(dataset / record["frames"])["frames"]
        out = engine.run_cot(frames, samples)  # cot-v2: the clip's motion summary in turn 1, as trained
        assert isinstance(out, CotOutput) and out.prompt_version == "cot-v2"
        assert (out.turn1, out.turn2) == (record["turn1"], record["turn2"]), record["id"]
        parse_turn1(out.turn1)  # valid against the taxonomy
        assert out.prompt_tokens > 2 * VIDEO_TOKENS and out.generated_tokens > 0 and out.latency_ms > 0


def test_engine_model_version_tracks_the_checkpoint(finetuned: Path, base: Path) -> None:
    assert TransformersEngine(base).model_version != TransformersEngine(finetuned).model_version
    with pytest.raises(FileNotFoundError):
        TransformersEngine(finetuned / "missing")
