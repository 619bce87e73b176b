"""The engines agree: on the same tiny model and clips, transformers (the reference, turn 1 constrained by
xgrammar), vLLM in-process (structured outputs) and a `vllm serve` server reached over its OpenAI API give the same
greedy text for both turns, with the same token counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.generation import TransformersEngine
from schemas.prompts import parse_turn1
from streams.demo import scenario_frames
from streams.settings import Settings
from streams.simulate import make_scenarios

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [scenario_frames(s, Settings()).frames for s in make_scenarios(77, 4, vehicles=2, duration=12.0)]


def test_vllm_and_transformers_give_the_same_greedy_chain_of_thought(
    trained_tiny_model: Path, vllm_engine, clips: list[np.ndarray]
) -> None:
    reference = TransformersEngine(trained_tiny_model, max_new_tokens=120).run_batch(clips)
    batched = vllm_engine.run_batch(clips)
    assert [(r.turn1, r.turn2) for r in reference] == [(v.turn1, v.turn2) for v in batched]
    assert [(r.prompt_tokens, r.generated_tokens) for r in reference] == [
        (v.prompt_tokens, v.generated_tokens) for v in batched
    ]
    assert vllm_engine.model_version == TransformersEngine(trained_tiny_model, max_new_tokens=1).model_version
    for out in batched:
        parse_turn1(out.turn1)  # turn 1 is valid JSON of the taxonomy: structured outputs constrain it
        assert out.latency_ms > 0


def test_a_batch_gives_what_each_clip_gives_alone(vllm_engine, clips: list[np.ndarray]) -> None:
    alone = [vllm_engine.run_batch([c])[0] for c in clips[:2]]
    together = vllm_engine.run_batch(clips[:2])
    assert [(a.turn1, a.turn2) for a in alone] == [(b.turn1, b.turn2) for b in together]


def test_the_vllm_server_over_http_gives_the_same_answers(
    trained_tiny_model: Path, vllm_server: str, clips: list[np.ndarray]
) -> None:
    from streams.inference.engines.openai import OpenAIEngine

    reference = TransformersEngine(trained_tiny_model, max_new_tokens=120).run_batch(clips)
    client = OpenAIEngine(vllm_server, str(trained_tiny_model), max_new_tokens=120)
    try:
        served = client.run_batch(clips)  # concurrent requests: the server batches them
    finally:
        client.close()
    assert [(r.turn1, r.turn2, r.prompt_tokens, r.generated_tokens) for r in reference] == [
        (s.turn1, s.turn2, s.prompt_tokens, s.generated_tokens) for s in served
    ]
    assert client.model_version == reference_version(trained_tiny_model)


def reference_version(path: Path) -> str:
    from streams.inference.engines.base import model_version_of

    return model_version_of(path)
