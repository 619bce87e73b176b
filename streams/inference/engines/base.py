"""What the worker needs from an inference engine. The reference implementation, transformers, lives in
`schemas.generation` because training evaluates checkpoints with it: serving and evaluation run one code path."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import numpy as np

from schemas.generation import (
    DEFAULT_MAX_NEW_TOKENS,
    CotOutput,
    Telemetry,
    clip_prompts,
    engine_prompt_version,
    model_version_of,
    prompt_version_of,
)


class Engine(Protocol):
    """An inference backend: transformers (the reference), vLLM in-process, or a `vllm serve` server. All three
    constrain turn 1 to the same JSON grammar and render prompts with `schemas.prompts.conversation`, so their greedy
    outputs agree. Each asks in one prompt version (its checkpoint's, `prompt_version_of`, unless told) and says so
    in every `CotOutput`."""

    model_version: str

    def run_batch(
        self, clips: list[np.ndarray], telemetry: Sequence[Telemetry] | None = None
    ) -> list[CotOutput]:
        """Turn 1 on each video, then turn 2 on the video + its turn-1 answer; frames (T, H, W, 3) uint8, 2 FPS;
        `telemetry` each clip's samples, t from the clip start (None: none for any clip)."""
        ...


@runtime_checkable
class ConcurrentEngine(Protocol):
    """An engine that takes clips one by one while others are in flight (continuous batching): vLLM's async engine
    or concurrent requests to a server. Each clip's turn 2 is submitted the moment its own turn 1 is done."""

    model_version: str

    def submit(self, frames: np.ndarray, telemetry: Telemetry = ()) -> Future[CotOutput]: ...


class OneAtATime:
    """A batch-only engine (the transformers reference, test doubles) behind `submit`: clips run one after another
    on one thread, so the worker's pipeline is the same whatever the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.model_version = engine, engine.model_version
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    def submit(self, frames: np.ndarray, telemetry: Telemetry = ()) -> Future[CotOutput]:
        return self._thread.submit(lambda: self.engine.run_batch([frames], [telemetry])[0])

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def concurrent(engine: Engine | ConcurrentEngine) -> ConcurrentEngine:
    return engine if isinstance(engine, ConcurrentEngine) else OneAtATime(engine)


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "ConcurrentEngine",
    "CotOutput",
    "Engine",
    "OneAtATime",
    "Telemetry",
    "clip_prompts",
    "concurrent",
    "engine_prompt_version",
    "model_version_of",
    "prompt_version_of",
]
