"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint locally: the DEMO model (no hub downloads here).

Command: `python -m training.tiny_model --out DIR [--seed 0] [--corpus TEXT ...] [--corpus-file JSON]`

Dims are the ones measured to work with both transformers and vLLM's CPU backend (docs/KNOWLEDGE: text hidden
128, 2 layers, 2 heads / 1 KV head, head_dim 64, mrope_section [8, 12, 12]; vision depth 2, hidden 64, out 128).
The tokenizer is a byte-level BPE trained here on the project's own prompt, taxonomy and answer texts (every prompt
version's turn 1, cot-v2's with motion summaries of varied synthetic telemetry, so the summary's words have tokens
of their own; digits are split one by one by Qwen2's pre-tokenizer and are single tokens already), with the
Qwen special tokens; the processor and a Qwen2.5-VL chat template are saved beside the weights, so
`from_pretrained(out_dir)` loads model, tokenizer and processor alike.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Annotated, Any

import typer

from schemas.messages import DetectedEvent, TelemetrySample
from schemas.model_io import GRID, install_torchvision_shim
from schemas.motion_summary import NO_TELEMETRY, summarize
from schemas.prompts import (
    NO_EVENTS_DESCRIPTION,
    PROMPT_VERSIONS,
    SYSTEM_PROMPT,
    TURN2_QUESTION,
    Prompt,
    describe,
    format_turn1,
)
from schemas.taxonomy import GOOD_DRIVING_INSTRUCTION, TAXONOMY, EventType, reference_instruction
from training.options import Seed, command_app, fail

TINY_RECIPE_VERSION = 2  # 2: the corpus holds cot-v2's turn 1 and motion summaries
VOCAB_SIZE = 3072
MAX_FRAME_PIXELS = 16384  # the clip builder's default budget (settings.max_pixels): frames are never larger

# Ids 0.. in this order; <|endoftext|> first so it doubles as pad. The full Qwen2.5 set, so any Qwen tooling
# (vLLM's processor included) finds the tokens it looks up.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2.5-VL's own chat template: a video content item renders as <|vision_start|><|video_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEMO_README = """# DEMO model — not for real fleets

A tiny Qwen2.5-VL (~{params:,} parameters) built by `training.tiny_model` from random weights (seed {seed}),
with a byte-level BPE tokenizer trained locally on drivecoach's prompt and taxonomy texts. It knows nothing
until `training.sft` fine-tunes it, and even then only about the simulated trips it was trained on. It exists so
the pipeline (streams, inference, training, evaluation) runs end to end on a laptop CPU without hub downloads.
Use a real Qwen2.5-VL checkpoint (settings `model`) for anything else.
"""


def synthetic_telemetry(rng: random.Random, seconds: int = 12) -> list[TelemetrySample]:
    """1 Hz samples of a made-up drive (cruise, brake, pull away, turn; a dropout now and then; a posted limit in
    half of them): only for the tokenizer's corpus, so its summaries use every clause and many numbers."""
    speed, limit = rng.uniform(0, 110), rng.choice([None, 30.0, 50.0, 60.0, 80.0, 100.0])
    samples = []
    for t in range(seconds):
        accel = rng.choice([0.0, 0.0, rng.uniform(-6, -1), rng.uniform(0.5, 4)])
        speed = max(0.0, speed + accel * 3.6)
        yaw = rng.choice([0.0, rng.uniform(-40, 40)])
        dropout = rng.random() < 0.1
        samples.append(
            TelemetrySample(
                t=float(t),
                speed_kmh=round(speed, 2),
                accel_ms2=None if dropout or rng.random() < 0.3 else round(accel, 3),
                yaw_rate_dps=None if dropout else round(yaw, 2),
                speed_limit_kmh=limit,
            )
        )
    return samples


def default_corpus(seed: int = 0, answers: int = 400) -> list[str]:
    """Prompt texts (every version's turn 1: cot-v2's with motion summaries), every taxonomy line, and canonical
    turn-1/turn-2 answers for random event sets."""
    texts = [SYSTEM_PROMPT, TURN2_QUESTION, NO_EVENTS_DESCRIPTION, GOOD_DRIVING_INSTRUCTION, NO_TELEMETRY]
    texts += [Prompt.for_clip((), version).turn1 for version in PROMPT_VERSIONS]
    motion_rng = random.Random(seed + 1)
    texts += [summarize(synthetic_telemetry(motion_rng)) for _ in range(answers // 2)]
    for d in TAXONOMY.values():
        texts += [d.type.value, d.view.value, d.definition, d.coaching]
    rng = random.Random(seed)
    types = list(EventType)
    for _ in range(answers):
        events = []
        for t in rng.sample(types, rng.randint(0, 3)):
            start = rng.randint(0, 60)
            events.append(
                DetectedEvent(type=t, view=TAXONOMY[t].view, start=start, end=start + rng.randint(0, 8))
            )
        texts += [format_turn1(events), describe(events), reference_instruction([e.type for e in events])]
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):  # -> tokenizers.Tokenizer
    """Byte-level BPE with Qwen2's pre-tokenizer; the special tokens take ids 0..13."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tiny_model(out_dir: Path, *, corpus: list[str], seed: int = 0) -> Path:
    """Write a random-init tiny Qwen2.5-VL + tokenizer + processor to `out_dir`; deterministic from `seed`.

    The tokenizer trains on `default_corpus()` plus `corpus` (e.g. the fine-tuning targets).
    """
    install_torchvision_shim()
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = default_corpus(seed) + list(corpus)
    tokenizer = qwen_tokenizer(train_tokenizer(texts))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert list(ids.values()) == list(range(len(SPECIAL_TOKENS))), ids

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(len(tokenizer), ids)).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    tiny_processor(tokenizer).save_pretrained(out_dir)

    params = sum(p.numel() for p in model.parameters())
    (out_dir / "README.md").write_text(DEMO_README.format(params=params, seed=seed))
    recipe = {
        "demo": True,
        "kind": "tiny-qwen2.5-vl-random-init",
        "recipe_version": TINY_RECIPE_VERSION,
        "seed": seed,
        "parameters": params,
        "vocab_size": len(tokenizer),
        "corpus_sha256": hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
        "note": "DEMO model: random weights, not for real fleets",
    }
    (out_dir / "tiny_model.json").write_text(json.dumps(recipe, indent=1) + "\n")
    return out_dir


def qwen_tokenizer(backend: Any) -> Any:  # tokenizers.Tokenizer -> transformers.Qwen2Tokenizer
    """The trained BPE as a Qwen2 tokenizer: <|im_end|> ends a turn, <|endoftext|> pads."""
    from transformers import Qwen2Tokenizer

    options: dict[str, Any] = {
        "unk_token": None,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": SPECIAL_TOKENS[1:],
        "model_max_length": 32768,
        "errors": "replace",
    }
    return Qwen2Tokenizer(tokenizer_object=backend, **options)


def tiny_config(vocab_size: int, ids: dict[str, int]) -> Any:  # -> transformers.Qwen2_5_VLConfig
    """The tiny dims (see the module's docstring) around the tokenizer's vocabulary and special-token ids."""
    from transformers import Qwen2_5_VLConfig

    special: dict[str, Any] = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 8192,
            "max_window_layers": 2,
            "rms_norm_eps": 1e-6,
            "use_sliding_window": False,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [8, 12, 12],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "dtype": "float32",
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_heads": 1,
            "out_hidden_size": 128,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        **special,
    )


def tiny_processor(tokenizer: Any) -> Any:  # -> transformers.Qwen2_5_VLProcessor
    """Image and video processors sized for the clip builder's frames, the tokenizer and the chat template."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    pixels = {"shortest_edge": 2 * GRID * 2 * GRID, "longest_edge": MAX_FRAME_PIXELS}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=dict(pixels)),
        video_processor=Qwen2VLVideoProcessor(
            size=dict(pixels),
            do_sample_frames=False,
            max_frames=128,
            cap_pixels_per_frame=False,
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def read_corpus_file(path: Path) -> list[str]:
    """A `--corpus-file`: a JSON list of strings."""
    texts = json.loads(path.read_text())
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{path} must hold a JSON list of strings")
    return texts


app = command_app(__doc__.splitlines()[0])


@app.command()
def tiny_model_command(
    out: Annotated[Path, typer.Option(help="where the model, tokenizer and processor go")],
    seed: Seed = 0,
    corpus: Annotated[
        list[str] | None,
        typer.Option(
            "--corpus", help="a text the tokenizer also trains on (repeatable; after --corpus-file's)"
        ),
    ] = None,
    corpus_file: Annotated[
        Path | None, typer.Option(help="a JSON list of texts the tokenizer also trains on")
    ] = None,
) -> None:
    """Build the tiny random-init DEMO Qwen2.5-VL in --out; print its path."""
    try:
        texts = read_corpus_file(corpus_file) if corpus_file is not None else []
    except (OSError, ValueError) as err:
        fail(f"corpus_file: {err}")
    print(build_tiny_model(out, corpus=[*texts, *(corpus or [])], seed=seed))


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="python -m training.tiny_model")


if __name__ == "__main__":
    main()
