"""`bench infer --arch ... --random-weights` on the CPU: the tiny configuration built with random weights, simulated
clips through vLLM for two turns each, and figures that add up; the published 3B and 7B configurations build the
published parameter counts; --arch without --random-weights stops with one sentence.

This module's vLLM engine is its own and is shut down before the test returns; it sorts before the modules that
start the session's shared engine (`vllm_engine`), so the two never run at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.model_io import GRID, install_torchvision_shim
from streams.bench.arch import ARCHS, TOKEN_ID_FIELDS, TOKENIZER_FILES, arch_config, bench_arch, report
from streams.cli import app
from streams.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DEMO model's tokenizer and processor, built in this process (the CLI runs `training.tiny_model` in its
    own, ~20 s more on this machine)."""
    from training.tiny_model import default_corpus, qwen_tokenizer, tiny_processor, train_tokenizer

    install_torchvision_shim()
    out = tmp_path_factory.mktemp("tokenizer")
    tiny_processor(qwen_tokenizer(train_tokenizer(default_corpus(0)))).save_pretrained(out)
    assert all((out / name).is_file() for name in TOKENIZER_FILES)
    return out


def test_tiny_random_weights_through_vllm_gives_consistent_figures(
    tmp_path: Path, local_tokenizer: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    clips, frames, tokens = 4, 8, 12
    r = bench_arch(
        settings,
        tmp_path,
        arch="tiny",
        clips=clips,
        frames=frames,
        tokens_per_turn=tokens,
        tokenizer_from=local_tokenizer,
    )
    h, w = r.frame_hw
    assert h % GRID == 0 and w % GRID == 0 and h * w <= settings.max_pixels
    assert (r.device, r.dtype, r.cuda_graphs, r.prefix_caching) == ("cpu", "float32", False, True)
    assert r.clips == clips and len(r.latencies_s) == clips and r.concurrency == clips
    assert r.generated_tokens == clips * 2 * tokens  # EOS ignored: every turn runs to the fixed count
    visual = (frames // 2) * (h // GRID) * (w // GRID)
    assert r.visual_tokens_per_clip == r.processor_visual_tokens_per_clip == visual
    assert r.prompt_tokens > clips * 2 * visual  # both turns carry the video, plus the text
    assert 0 < r.cached_prompt_tokens < r.prompt_tokens  # turn 2's video prefix came from the prefix cache
    assert 0 < r.preprocess_share < 1
    assert (
        r.clips_per_s > 0
        and r.generated_tokens_per_s > 0
        and r.prompt_tokens_per_s > r.generated_tokens_per_s
    )
    assert r.peak_gpu_bytes is None
    assert r.parameters > 0 and r.weight_bytes == 4 * r.parameters
    from rich.console import Console

    console = Console(width=160, record=True)
    for part in report(r):
        console.print(part)
    text = console.export_text()
    assert "n/a (CPU)" in text and "CPU preprocessing share" in text


@pytest.mark.parametrize(("arch", "billions"), [("qwen2.5-vl-3b", 3.75), ("qwen2.5-vl-7b", 8.29)])
def test_published_configurations_have_the_published_parameter_counts(arch: str, billions: float) -> None:
    """The hub pages give 3.75B and 8.29B parameters; built on the meta device, nothing is allocated."""
    install_torchvision_shim()
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    ids = {token: k for k, token in enumerate(sorted(set(TOKEN_ID_FIELDS.values())))}
    config = arch_config(arch, ids, "bfloat16")
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions
    text = config.text_config
    assert text.hidden_size // text.num_attention_heads == 128
    assert config.video_token_id == ids["<|video_pad|>"] and text.vocab_size == ARCHS[arch]["vocab_size"]


def test_arch_without_random_weights_fails_with_one_sentence() -> None:
    result = CliRunner().invoke(app, ["bench", "infer", "--arch", "qwen2.5-vl-3b"])
    assert result.exit_code == 2
    assert "needs --random-weights" in " ".join(result.output.split())
