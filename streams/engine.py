"""The inference engines behind one interface: transformers (schemas.generation, the reference), vLLM in-process
(streams.vllm_engine) and a `vllm serve` server (streams.openai_engine)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from schemas.generation import (
    DEFAULT_MAX_NEW_TOKENS,
    CotOutput,
    TransformersEngine,
    is_demo_model,
    is_hub_id,
    model_version_of,
)
from streams.settings import Settings


class Engine(Protocol):
    """What the worker needs from an inference backend: transformers (the reference), vLLM in-process, or a
    `vllm serve` server. All three constrain turn 1 to the same JSON grammar, so their greedy outputs agree."""

    model_version: str

    def run_batch(self, clips: list[np.ndarray]) -> list[CotOutput]:
        """Turn 1 on each video, then turn 2 on the video + its turn-1 answer; frames (T, H, W, 3) uint8, 2 FPS."""
        ...


def load_engine(settings: Settings, model_path: str) -> Engine:
    """The configured engine on `model_path` (imports only what that engine needs)."""
    if settings.engine == "vllm":
        from streams.vllm_engine import VllmEngine

        return VllmEngine(model_path, max_new_tokens=settings.max_new_tokens, max_model_len=settings.vllm_max_model_len)
    if settings.engine == "openai":
        from streams.openai_engine import OpenAIEngine

        return OpenAIEngine(settings.openai_base_url, model_path, max_new_tokens=settings.max_new_tokens,
                            api_key=settings.openai_api_key or None)
    return TransformersEngine(model_path, max_new_tokens=settings.max_new_tokens)


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "CotOutput", "Engine", "TransformersEngine", "is_demo_model", "is_hub_id",
           "load_engine", "model_version_of"]
