"""schemas.model_io with a real tiny Qwen2.5-VL processor: token counts, no rescaling, the torchvision shim."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from schemas.model_io import (
    build_inputs,
    install_torchvision_shim,
    load_processor,
    processor_kwargs,
    video_input,
    video_tokens,
)
from schemas.prompts import Prompt, conversation
from training.tiny_model import SPECIAL_TOKENS, build_tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus=["a tiny test corpus"], seed=0)


@pytest.fixture(scope="module")
def processor(tiny_dir: Path):
    return load_processor(tiny_dir)


def frames_of(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_shim_makes_torchvision_importable_in_a_fresh_process() -> None:
    code = (
        "from schemas.model_io import install_torchvision_shim as s\n"
        "first = s(); second = s()\n"
        "import torchvision, torchvision.transforms.v2.functional\n"
        "from transformers import Qwen2VLVideoProcessor\n"
        "print(first, second, torchvision.__version__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second, _ = done.stdout.split()
    assert second == first  # idempotent: a second call neither fails nor changes the answer


def test_shim_is_a_no_op_once_torchvision_is_imported(processor) -> None:
    import torchvision  # noqa: F401  (imported by the processor fixture already)

    install_torchvision_shim()  # must not raise


@pytest.mark.parametrize(
    ("t", "h", "w"),
    [(40, 140, 112), (8, 84, 140), (2, 56, 56), (7, 112, 84), (128, 140, 112)],
)
def test_video_tokens_are_half_t_times_grid(processor, t: int, h: int, w: int) -> None:
    inputs = build_inputs(
        processor, conversation(prompt=Prompt()), frames_of(t, h, w), add_generation_prompt=True
    )
    n_video = int((inputs["input_ids"] == processor.video_token_id).sum())
    assert n_video == video_tokens(t, h, w) == -(-t // 2) * (h // 28) * (w // 28)
    assert inputs["video_grid_thw"].tolist() == [[-(-t // 2), h // 14, w // 14]]
    assert inputs["pixel_values_videos"].shape == (-(-t // 2) * (h // 14) * (w // 14), 3 * 2 * 14 * 14)
    assert inputs["second_per_grid_ts"].tolist() == [1.0]  # 2 frames per temporal patch at 2 FPS, not 24 fps
    for key in ("attention_mask", "mm_token_type_ids"):
        assert inputs[key].shape == inputs["input_ids"].shape


def test_frames_are_not_rescaled(processor) -> None:
    # 28x56 = 1568 pixels: below both transformers' default min_pixels (100352) and the saved one (3136).
    frames = frames_of(4, 28, 56, seed=1)
    inputs = build_inputs(processor, conversation(prompt=Prompt()), frames, add_generation_prompt=True)
    assert inputs["video_grid_thw"].tolist() == [[2, 2, 4]]
    # The first patch is exactly the normalised source pixels: frames 0-1, rows 0-13, cols 0-13.
    vp = processor.video_processor
    mean, std = np.array(vp.image_mean), np.array(vp.image_std)
    expected = (frames[0:2, 0:14, 0:14].astype(np.float64) / 255.0 - mean) / std  # (T, ph, pw, C)
    expected = expected.transpose(3, 0, 1, 2).reshape(-1)  # the processor's (C, T, ph, pw) order
    np.testing.assert_allclose(inputs["pixel_values_videos"][0].numpy(), expected, atol=1e-5)


def test_the_default_processor_would_upscale(processor) -> None:
    """The trap processor_kwargs avoids: transformers' default min_pixels upscales a small frame."""
    from transformers import Qwen2VLVideoProcessor

    frames, meta = video_input(frames_of(4, 56, 84))
    default = Qwen2VLVideoProcessor()(
        videos=[frames], video_metadata=[meta], return_tensors="pt", cap_pixels_per_frame=False
    )
    assert default["video_grid_thw"][0, 1:].prod() > 4 * 6
    ours = processor.video_processor(
        videos=[frames], video_metadata=[meta], return_tensors="pt", **processor_kwargs(56, 84)
    )
    assert ours["video_grid_thw"].tolist() == [[2, 4, 6]]


def test_video_input_metadata() -> None:
    frames, meta = video_input(frames_of(6, 56, 56))
    assert meta["fps"] == 2.0 and meta["total_num_frames"] == 6 and meta["frames_indices"] == list(range(6))
    assert meta["duration"] == 3.0
    with pytest.raises(ValueError):
        video_input(frames.astype(np.float32))
    with pytest.raises(ValueError):
        processor_kwargs(50, 56)


def test_chat_template_renders_the_video_placeholder(processor) -> None:
    text = processor.apply_chat_template(conversation("{}", "Slow down.", prompt=Prompt()), tokenize=False)
    assert text.count("<|vision_start|><|video_pad|><|vision_end|>") == 1
    assert text.count("<|im_start|>assistant\n") == 2
    ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))


def test_tiny_model_is_deterministic_from_the_seed(tiny_dir: Path, tmp_path: Path) -> None:
    def digest(d: Path) -> dict[str, str]:
        names = ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json")
        return {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in names}

    again = build_tiny_model(tmp_path / "again", corpus=["a tiny test corpus"], seed=0)
    other = build_tiny_model(tmp_path / "other", corpus=["a tiny test corpus"], seed=1)
    assert digest(again) == digest(tiny_dir)
    assert digest(other)["model.safetensors"] != digest(tiny_dir)["model.safetensors"]
    assert "DEMO" in (tiny_dir / "README.md").read_text()


@pytest.mark.parametrize(("t", "h", "w"), [(24, 56, 84), (4, 56, 84), (2, 140, 56)])
def test_text_after_a_video_starts_past_every_video_position(
    tiny_dir: Path, processor, t: int, h: int, w: int
):
    """Qwen2.5-VL's original rule (and vLLM's): the first token after the video sits at the video's largest
    position id + 1, temporal ids included; and decoding continues from there (the rope delta)."""
    from schemas.model_io import load_model

    model = load_model(tiny_dir)
    inputs = build_inputs(
        processor, conversation(prompt=Prompt()), frames_of(t, h, w), add_generation_prompt=True
    )
    positions, deltas = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
    )
    video = np.flatnonzero(inputs["mm_token_type_ids"][0].numpy() == 2)
    after = int(video[-1]) + 1
    assert positions[:, 0, after].tolist() == [int(positions[:, 0, video].max()) + 1] * 3
    assert int(deltas[0]) == int(positions[:, 0, -1].max()) + 1 - inputs["input_ids"].shape[1]


def test_clips_travel_losslessly_at_two_fps(tmp_path: Path) -> None:
    frames = np.random.default_rng(3).integers(0, 256, (6, 112, 140, 3), dtype=np.uint8)
    import cv2

    from schemas.model_io import encode_lossless

    path = tmp_path / "clip.mkv"
    path.write_bytes(encode_lossless(frames))
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while (got := cap.read())[0]:
        decoded.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    assert cap.get(cv2.CAP_PROP_FPS) == 2.0
    assert np.array_equal(np.stack(decoded), frames)


def test_the_tokenizer_reads_the_motion_summary_in_whole_words(processor) -> None:
    """cot-v2's turn 1 carries the motion summary: the tiny tokenizer learned its words (each one token), and
    numbers split into digits, each a token of its own."""
    from schemas.messages import TelemetrySample
    from schemas.motion_summary import summarize

    tok = processor.tokenizer
    samples = [
        TelemetrySample(t=float(t), speed_kmh=64.0 - 9 * t, yaw_rate_dps=12.0, speed_limit_kmh=50.0)
        for t in range(5)
    ]
    text = summarize(samples)
    for word in (
        "Vehicle",
        " motion",
        " speed",
        " braking",
        " acceleration",
        " lateral",
        " yaw",
        " rate",
        " limit",
    ):
        assert word.strip() in text and len(tok.encode(word, add_special_tokens=False)) == 1, word
    assert tok.tokenize("0.26") == ["0", ".", "2", "6"]
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
