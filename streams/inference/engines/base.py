"""What the worker needs from an inference engine. The reference implementation, transformers, lives in
`schemas.generation` because training evaluates checkpoints with it: serving and evaluation run one code path."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from schemas.generation import DEFAULT_MAX_NEW_TOKENS, CotOutput, model_version_of


class Engine(Protocol):
    """An inference backend: transformers (the reference), vLLM in-process, or a `vllm serve` server. All three
    constrain turn 1 to the same JSON grammar, so their greedy outputs agree."""

    model_version: str

    def run_batch(self, clips: list[np.ndarray]) -> list[CotOutput]:
        """Turn 1 on each video, then turn 2 on the video + its turn-1 answer; frames (T, H, W, 3) uint8, 2 FPS."""
        ...


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "CotOutput", "Engine", "model_version_of"]
