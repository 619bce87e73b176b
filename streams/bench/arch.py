"""`drivecoach bench infer --arch ARCH --random-weights`: the real Qwen2.5-VL architecture, random weights, vLLM.

Speed depends on shapes, not weights, so no download is needed: the model is built from the published
configuration (`ARCHS`) with random weights in the target dtype, saved beside a local byte-level tokenizer and
processor (the DEMO model's, built by `training.tiny_model` in its own process), and the repo's simulated clips
(stacked frames on the 28-px grid within the pixel budget) go through vLLM twice each: turn 1, then turn 2 over
the same video. Every turn generates exactly `tokens_per_turn` tokens (EOS ignored, never detokenized: ids above
the small tokenizer's vocabulary are fine). Figures: clips/s, prompt and generated tokens/s, visual tokens per
clip, peak GPU memory, and the CPU preprocessing share (the HF processor timed on the same clips, per clip, over
the wall time per clip).

Turn 2 reuses turn 1's prompt prefix (system, video, question), which prefix caching serves from the KV cache;
its assistant text is a canned text of `tokens_per_turn` tokens, as long as what turn 1 generated.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.model_io import (
    TEMPORAL_PATCH,
    build_inputs,
    install_torchvision_shim,
    load_processor,
    processor_kwargs,
    render_prompt,
    video_input,
    video_tokens,
)
from schemas.prompts import Prompt, conversation
from streams.inference.engines.vllm import VLLM_ENV_DEFAULTS, with_startup_shim
from streams.settings import Settings

# Qwen2.5-VL-3B-Instruct's config.json as published (huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct, file config.json;
# no hub access here: the values were read from public copies of that file, e.g. a model-card mirror found with
# the code search, and agree with the 3B module printout: text 2048 x 36 layers, 16 heads / 2 KV heads,
# MLP 11008, tied embeddings, vision 1280 x 32 blocks, merger out 2048).
QWEN25_VL_3B: dict[str, Any] = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}

# Qwen2.5-VL-7B-Instruct's config.json as published (huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct, file config.json;
# read from public copies: NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_qwen2_5vl.py, which
# notes "28 layers for full model", and others agreeing: text 3584 x 28 layers, 28 heads / 4 KV heads, MLP 18944,
# untied 152064-token vocabulary; the same vision tower as the 3B with the merger out at 3584).
QWEN25_VL_7B: dict[str, Any] = {
    **QWEN25_VL_3B,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_window_layers": 28,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
    "vision_config": {**QWEN25_VL_3B["vision_config"], "out_hidden_size": 3584},
    "vocab_size": 152064,
}

# CPU-sized, with the DEMO model's dims (training/tiny_model.py): head_dim 64 (vLLM's CPU attention takes 32, 64,
# 80, 96, 112, 128, ...), mrope_section summing to head_dim / 2. Its vocabulary (4096) is larger than the local
# tokenizer's (3072), as the real ones are, so CI exercises generated ids the tokenizer does not have.
TINY: dict[str, Any] = {
    **QWEN25_VL_3B,
    "hidden_size": 128,
    "intermediate_size": 512,
    "max_position_embeddings": 32768,
    "max_window_layers": 2,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "vision_config": {
        **QWEN25_VL_3B["vision_config"],
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_heads": 1,
        "out_hidden_size": 128,
        "fullatt_block_indexes": [1],
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
    "vocab_size": 4096,
}

ARCHS: dict[str, dict[str, Any]] = {
    "tiny": TINY,
    "qwen2.5-vl-3b": QWEN25_VL_3B,
    "qwen2.5-vl-7b": QWEN25_VL_7B,
}
# 128 frames: the paper's budget (64 s at 2 FPS); the tiny CPU run takes the demo's 12-s clips.
DEFAULT_FRAMES = {"tiny": 24, "qwen2.5-vl-3b": 128, "qwen2.5-vl-7b": 128}

# The tokenizer's special tokens, mapped onto the config's token-id fields.
TOKEN_ID_FIELDS = {
    "bos_token_id": "<|endoftext|>",
    "pad_token_id": "<|endoftext|>",
    "eos_token_id": "<|im_end|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "vision_token_id": "<|vision_pad|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}
# What a checkpoint directory needs besides config.json and weights: tokenizer, processor, chat template.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class ArchBench:
    arch: str
    device: str  # "cuda" or "cpu"
    dtype: str
    parameters: int
    clips: int
    frames: int
    frame_hw: tuple[int, int]
    tokens_per_turn: int
    concurrency: int
    prefix_caching: bool
    cuda_graphs: bool
    wall_s: float  # first turn-1 submitted to last turn-2 answer, warm engine
    engine_start_s: float
    build_s: float  # config, random weights, tokenizer written
    prompt_tokens: int  # both turns, video tokens included
    cached_prompt_tokens: int  # served by prefix caching
    generated_tokens: int
    visual_tokens_per_clip: int  # (T/2) * (H/28) * (W/28)
    processor_visual_tokens_per_clip: int  # from the HF processor's video_grid_thw
    preprocess_s_per_clip: float  # the HF processor on a clip's turn-1 inputs, timed separately
    latencies_s: tuple[float, ...]  # per clip: turn 1 submitted to turn 2 answered
    peak_gpu_bytes: int | None  # device memory in use at its peak (NVML), None on CPU
    weight_bytes: int

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.wall_s

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s

    @property
    def preprocess_share(self) -> float:
        """The CPU time the HF processor needs per clip, as a share of the wall time per clip."""
        return self.preprocess_s_per_clip / (self.wall_s / self.clips)

    @property
    def p50_latency_s(self) -> float:
        return float(np.percentile(self.latencies_s, 50))


def arch_config(arch: str, token_ids: dict[str, int], dtype: str) -> Any:  # -> transformers.Qwen2_5_VLConfig
    """The published configuration of `arch`, its token ids replaced by the local tokenizer's, in `dtype`."""
    from transformers import Qwen2_5_VLConfig

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (one of {', '.join(ARCHS)})")
    published = dict(ARCHS[arch])
    ids = {name: token_ids[token] for name, token in TOKEN_ID_FIELDS.items()}
    config: Any = Qwen2_5_VLConfig.from_dict({**published, **ids, "torch_dtype": dtype})
    for name in ("bos_token_id", "pad_token_id", "eos_token_id"):
        setattr(config.text_config, name, ids[name])
    config.dtype = dtype
    config.text_config.dtype = dtype
    return config


def write_tokenizer(out: Path) -> Path:
    """The DEMO model's local tokenizer, processor and chat template, built by `training.tiny_model` in its own
    process (streams never imports training) in a scratch directory; only those files are kept in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f"{out.name}.tiny")
    done = subprocess.run(
        [sys.executable, "-m", "training.tiny_model", "--out", str(scratch)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the tokenizer failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    for name in TOKENIZER_FILES:
        shutil.copy2(scratch / name, out / name)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def special_token_ids(checkpoint: Path) -> dict[str, int]:
    tokenizer = load_processor(checkpoint).tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in set(TOKEN_ID_FIELDS.values())}
    missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise RuntimeError(f"the tokenizer in {checkpoint} lacks {missing}")
    return ids


def _init_and_save(arch: str, token_ids: dict[str, int], out: str, dtype: str, device: str, seed: int) -> int:
    """Random weights straight in `dtype` on `device` (no float32 copy first), saved to `out`; the parameter count."""
    install_torchvision_shim()
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = arch_config(arch, token_ids, dtype)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype))
    model.eval().save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    (Path(out) / "random_weights.json").write_text(
        json.dumps({"arch": arch, "dtype": dtype, "seed": seed, "parameters": params, "random_weights": True})
        + "\n"
    )
    return params


def _init_and_save_child(queue: Any, *args: Any) -> None:
    try:
        queue.put(("ok", _init_and_save(*args)))
    except BaseException as err:  # reported to the parent, which raises it
        queue.put(("error", f"{type(err).__name__}: {err}"))


def write_checkpoint(
    arch: str, out: Path, *, dtype: str, device: str, seed: int = 0, tokenizer_from: Path | None = None
) -> int:
    """A loadable random-weight checkpoint of `arch` in `out` (config, weights, tokenizer, processor); the parameter
    count. The tokenizer files come from `tokenizer_from` when given, else `write_tokenizer` builds them. On a GPU
    the weights are made in a spawned process, so this one never holds a CUDA context or the weights' memory when
    vLLM starts."""
    if tokenizer_from is None:
        write_tokenizer(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            shutil.copy2(tokenizer_from / name, out / name)
    ids = special_token_ids(out)
    if device == "cpu":
        return _init_and_save(arch, ids, str(out), dtype, device, seed)
    return _init_and_save_in_child(arch, ids, out, dtype, device, seed)


def _init_and_save_in_child(
    arch: str, ids: dict[str, int], out: Path, dtype: str, device: str, seed: int
) -> int:
    import multiprocessing
    import queue as queues

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_init_and_save_child, args=(results, arch, ids, str(out), dtype, device, seed))
    proc.start()
    proc.join()
    try:
        status, value = results.get(timeout=10)
    except queues.Empty:
        status, value = "error", f"the process building it died (exit code {proc.exitcode})"
    if status != "ok":
        raise RuntimeError(f"building the random-weight {arch} failed: {value}")
    return int(value)


def make_clips(
    settings: Settings, count: int, frames: int, *, distinct: int = 8, seed: int = 11
) -> list[np.ndarray]:
    """`count` clips of `frames` stacked frames from the simulated trips, each video different from every other
    (so no clip is served from another's cache): `distinct` rendered trips, reused shifted in time, with the clip's
    number written into its first pixels."""
    from streams.demo import scenario_frames
    from streams.simulate import make_scenarios

    if frames < TEMPORAL_PATCH or frames % TEMPORAL_PATCH:
        raise ValueError(f"frames must be an even number >= {TEMPORAL_PATCH}, got {frames}")
    clip_settings = settings.model_copy(update={"max_frames": frames})
    duration = frames / settings.sample_fps
    trips = make_scenarios(seed, min(count, distinct), vehicles=4, duration=duration)
    base = [scenario_frames(s, clip_settings).frames for s in trips]
    clips = []
    for k in range(count):
        clip = np.roll(base[k % len(base)], shift=TEMPORAL_PATCH * (k // len(base)), axis=0).copy()
        clip[0, 0, :4] = np.frombuffer(k.to_bytes(12, "little"), dtype=np.uint8).reshape(4, 3)
        clips.append(clip)
    return clips


def clip_prompt(settings: Settings, frames: int, *, seed: int = 11) -> Prompt:
    """The production prompt of a clip as long as `make_clips`' (the first trip's telemetry summarised in turn 1):
    every request carries a motion summary of realistic length. It follows the video in the prompt, so sharing it
    lets no clip reuse another's cache."""
    from streams.demo import scenario_telemetry
    from streams.simulate import make_scenarios

    (trip,) = make_scenarios(seed, 1, vehicles=4, duration=frames / settings.sample_fps)
    return Prompt.for_clip(scenario_telemetry(trip))


def measure_preprocessing(
    checkpoint: Path, clips: list[np.ndarray], prompt: Prompt | None = None
) -> tuple[float, int]:
    """Seconds per clip the HF processor takes on a clip's turn-1 inputs (chat template, tokenizer, video
    resize/normalise/patchify: what vLLM's front end runs once per video), after one warm-up; and the visual
    tokens per clip from its video grid."""
    processor = load_processor(checkpoint)
    merge = int(processor.video_processor.merge_size)
    messages = conversation(prompt=prompt or Prompt.for_clip(()))
    build_inputs(processor, messages, clips[0], add_generation_prompt=True)
    times, tokens = [], set()
    for frames in clips:
        started = time.perf_counter()
        inputs = build_inputs(processor, messages, frames, add_generation_prompt=True)
        times.append(time.perf_counter() - started)
        tokens.add(int(inputs["video_grid_thw"].prod(dim=-1).sum()) // (merge * merge))
    if len(tokens) != 1:
        raise RuntimeError(f"clips of one shape gave different visual token counts: {sorted(tokens)}")
    return float(np.mean(times)), tokens.pop()


def canned_turn1(tokenizer: Any, tokens: int) -> str:
    """A text of exactly `tokens` tokens standing in for turn 1's answer in turn 2's prompt."""
    for word in ("a", "the", "safe", "and", "0"):
        text = " ".join([word] * tokens)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == tokens:
            return text
    raise RuntimeError(f"no canned turn-1 text of {tokens} tokens for this tokenizer")


class GpuMemoryPeak:
    """The peak of GPU memory in use (NVML, as nvidia-smi reports it; summed over CUDA_VISIBLE_DEVICES, else over
    the host's GPUs) while the block runs; `peak_bytes` stays None where there is no NVIDIA GPU."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read: Callable[[], int] | None = None

    def _nvml(self) -> Callable[[], int] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(" ", "")
            indices = (
                [int(i) for i in visible.split(",") if i]
                if visible.replace(",", "").isdigit()
                else list(range(pynvml.nvmlDeviceGetCount()))
            )
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        except Exception:
            return None
        if not handles:
            return None
        return lambda: sum(int(pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in handles)

    def _poll(self) -> None:
        assert self._read is not None
        while not self._stop.is_set():
            used = self._read()
            self.peak_bytes = used if self.peak_bytes is None else max(self.peak_bytes, used)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GpuMemoryPeak:
        self._read = self._nvml()
        if self._read is not None:
            self._thread = threading.Thread(target=self._poll, name="gpu-memory-peak", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            assert self._read is not None
            self.peak_bytes = max(self.peak_bytes or 0, self._read())


def _vllm_environment() -> None:
    for name, value in VLLM_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    with_startup_shim(os.environ)  # vLLM starts fresh interpreters: they need the shim too
    install_torchvision_shim()


@dataclass
class _Turns:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0


def run_two_turns(
    llm: Any, requests: list[tuple[dict[str, Any], dict[str, Any]]], params: Any, concurrency: int
) -> tuple[float, tuple[float, ...], _Turns]:
    """Each clip's turn 1, then its turn 2 as soon as turn 1 is done, `concurrency` clips in flight, on vLLM's
    engine loop (as vLLM's offline llm_engine example drives it); wall seconds, per-clip latencies, token counts."""
    engine = llm.llm_engine
    pending = list(range(len(requests)))[::-1]
    started: dict[int, float] = {}
    latencies: list[float] = []
    turns = _Turns()

    def submit(clip: int, turn: int) -> None:
        engine.add_request(f"clip{clip}-turn{turn}", requests[clip][turn - 1], params)

    t0 = time.perf_counter()
    while pending and len(started) < concurrency:
        clip = pending.pop()
        started[clip] = time.perf_counter()
        submit(clip, 1)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if not out.finished:
                continue
            clip_s, turn_s = out.request_id.removeprefix("clip").split("-turn")
            clip, turn = int(clip_s), int(turn_s)
            turns.prompt_tokens += len(out.prompt_token_ids or [])
            turns.cached_tokens += int(out.num_cached_tokens or 0)
            turns.generated_tokens += len(out.outputs[0].token_ids)
            if turn == 1:
                submit(clip, 2)
                continue
            latencies.append(time.perf_counter() - started.pop(clip))
            if pending:
                nxt = pending.pop()
                started[nxt] = time.perf_counter()
                submit(nxt, 1)
    return time.perf_counter() - t0, tuple(latencies), turns


def bench_arch(
    settings: Settings,
    work: Path,
    *,
    arch: str,
    clips: int = 16,
    frames: int | None = None,
    tokens_per_turn: int = 160,
    concurrency: int | None = None,
    dtype: str = "auto",
    cuda_graphs: bool | None = None,
    prefix_caching: bool = True,
    mm_encoder_tp_mode: str | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    seed: int = 0,
    tokenizer_from: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ArchBench:
    """Build `arch` with random weights in `work`, then time `clips` simulated clips (two turns each, after one
    warm-up clip) through vLLM; the engine is shut down before returning. `tokenizer_from`: a directory with
    `TOKENIZER_FILES` to reuse (default: built by `training.tiny_model` in its own process)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (one of {', '.join(ARCHS)})")
    if tokens_per_turn < 1 or clips < 1:
        raise ValueError("clips and tokens_per_turn must be >= 1")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    if cuda_graphs is None:
        cuda_graphs = device == "cuda"
    frames = frames or DEFAULT_FRAMES[arch]
    concurrency = min(concurrency or clips, clips)

    progress(f"rendering {clips + 1} simulated clips of {frames} frames")
    videos = make_clips(settings, clips + 1, frames)  # the last one warms the engine up
    warmup, videos = videos[-1], videos[:-1]
    prompt = clip_prompt(settings, frames)
    frame_h, frame_w = int(videos[0].shape[1]), int(videos[0].shape[2])

    progress(f"building {arch} with random weights ({dtype}, {device})")
    checkpoint = work / f"{arch}-random"
    started = time.perf_counter()
    params = write_checkpoint(
        arch, checkpoint, dtype=dtype, device=device, seed=seed, tokenizer_from=tokenizer_from
    )
    build_s = time.perf_counter() - started

    progress("timing the HF processor on the clips")
    preprocess_s, processor_tokens = measure_preprocessing(checkpoint, videos, prompt)

    processor: Any = load_processor(checkpoint)
    turn1_text = canned_turn1(processor.tokenizer, tokens_per_turn)
    kwargs = processor_kwargs(frame_h, frame_w)

    def request(messages: list[dict[str, Any]], video: np.ndarray) -> dict[str, Any]:
        return {
            "prompt": render_prompt(processor, messages, add_generation_prompt=True),
            "multi_modal_data": {"video": video_input(video, settings.sample_fps)},
            "mm_processor_kwargs": kwargs,
        }

    first, second = conversation(prompt=prompt), conversation(turn1_text, prompt=prompt)
    requests = [(request(first, v), request(second, v)) for v in [*videos, warmup]]
    visual = video_tokens(frames, frame_h, frame_w)
    turn2_text = len(processor.tokenizer(requests[0][1]["prompt"], add_special_tokens=False)["input_ids"])
    max_model_len = 256 * math.ceil((visual + turn2_text + tokens_per_turn + 64) / 256)

    _vllm_environment()
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params_ = SamplingParams(
        temperature=0.0,
        max_tokens=tokens_per_turn,
        min_tokens=tokens_per_turn,
        ignore_eos=True,
        detokenize=False,  # the random ids may lie beyond the local tokenizer's vocabulary
        output_kind=RequestOutputKind.FINAL_ONLY,
    )
    engine_args: dict[str, Any] = {
        "model": str(checkpoint),
        "dtype": dtype,
        "seed": seed,
        "enforce_eager": not cuda_graphs,
        "enable_prefix_caching": prefix_caching,
        "max_model_len": max_model_len,
        "limit_mm_per_prompt": {"video": 1, "image": 0},
        "tensor_parallel_size": tensor_parallel_size,
    }
    if mm_encoder_tp_mode is not None:
        engine_args["mm_encoder_tp_mode"] = mm_encoder_tp_mode
    if gpu_memory_utilization is not None:
        engine_args["gpu_memory_utilization"] = gpu_memory_utilization

    progress("starting vLLM")
    with GpuMemoryPeak() as memory:
        started = time.perf_counter()
        llm = LLM(**engine_args)
        engine_start_s = time.perf_counter() - started
        try:
            progress("warm-up clip")
            run_two_turns(llm, requests[-1:], params_, 1)
            progress(f"{clips} clips, {concurrency} at a time")
            wall, latencies, turns = run_two_turns(llm, requests[:-1], params_, concurrency)
        finally:
            llm.llm_engine.engine_core.shutdown()
    dtype_bytes = torch.finfo(getattr(torch, dtype)).bits // 8
    return ArchBench(
        arch=arch,
        device=device,
        dtype=dtype,
        parameters=params,
        clips=clips,
        frames=frames,
        frame_hw=(frame_h, frame_w),
        tokens_per_turn=tokens_per_turn,
        concurrency=concurrency,
        prefix_caching=prefix_caching,
        cuda_graphs=cuda_graphs,
        wall_s=wall,
        engine_start_s=engine_start_s,
        build_s=build_s,
        prompt_tokens=turns.prompt_tokens,
        cached_prompt_tokens=turns.cached_tokens,
        generated_tokens=turns.generated_tokens,
        visual_tokens_per_clip=visual,
        processor_visual_tokens_per_clip=processor_tokens,
        preprocess_s_per_clip=preprocess_s,
        latencies_s=latencies,
        peak_gpu_bytes=memory.peak_bytes,
        weight_bytes=params * dtype_bytes,
    )


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def report(r: ArchBench) -> list[Any]:
    """The rich renderables `drivecoach bench infer --arch` prints."""
    from rich.table import Table

    gib = 1024**3
    table = Table(
        title=f"{r.arch}, random weights: {r.clips} clips of {r.frames} frames of {r.frame_hw[0]}x{r.frame_hw[1]}, "
        f"{r.tokens_per_turn} generated tokens per turn, 2 turns"
    )
    for col in ("figure", "value"):
        table.add_column(col)
    rows = [
        ("clips/s", f"[bold]{r.clips_per_s:.2f}[/]"),
        (
            "prompt tokens/s (both turns)",
            f"{r.prompt_tokens_per_s:,.0f} ({r.prompt_tokens / r.clips:,.0f} per clip, video included)",
        ),
        ("  of which from the prefix cache", f"{r.cached_prompt_tokens / max(r.prompt_tokens, 1):.0%}"),
        ("generated tokens/s", f"{r.generated_tokens_per_s:,.0f}"),
        (
            "visual tokens per clip",
            f"{r.visual_tokens_per_clip:,} (processor: {r.processor_visual_tokens_per_clip:,})",
        ),
        ("p50 clip latency (turn 1 in to turn 2 out)", f"{r.p50_latency_s:.2f} s"),
        (
            "peak GPU memory",
            "n/a (CPU)"
            if r.peak_gpu_bytes is None
            else f"{r.peak_gpu_bytes / gib:.1f} GiB (NVML, visible GPUs; vLLM takes up to its "
            "gpu_memory_utilization for the KV cache)",
        ),
        ("weights", f"{_count(r.parameters)} parameters, {r.weight_bytes / gib:.2f} GiB {r.dtype}"),
        (
            "CPU preprocessing share",
            f"[bold]{r.preprocess_share:.0%}[/] ({r.preprocess_s_per_clip * 1000:.0f} ms HF processor per clip / "
            f"{r.wall_s / r.clips * 1000:.0f} ms wall per clip)",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    notes = (
        f"{r.device}, {r.dtype}, {'CUDA graphs' if r.cuda_graphs else 'eager'}, prefix caching "
        f"{'on' if r.prefix_caching else 'off'}, {r.concurrency} clips in flight; wall {r.wall_s:.1f} s after a "
        f"warm-up clip; engine start {r.engine_start_s:.0f} s, building the checkpoint {r.build_s:.0f} s (not counted)"
    )
    return [table, notes]


__all__ = [
    "ARCHS",
    "DEFAULT_FRAMES",
    "QWEN25_VL_3B",
    "QWEN25_VL_7B",
    "TINY",
    "ArchBench",
    "GpuMemoryPeak",
    "arch_config",
    "bench_arch",
    "canned_turn1",
    "clip_prompt",
    "make_clips",
    "measure_preprocessing",
    "report",
    "run_two_turns",
    "write_checkpoint",
]
