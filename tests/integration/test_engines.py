"""The engines agree: on the same tiny model and clips, transformers (the reference, turn 1 constrained by
xgrammar), vLLM in-process (structured outputs) and a `vllm serve` server reached over its OpenAI API give the same
greedy text for both turns, with the same token counts, asked in the production prompt (cot-v2: each clip's
telemetry summarised in turn 1; the clips carry a late brake, a rolling stop and steady cruising)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.generation import TransformersEngine
from schemas.messages import TelemetrySample
from schemas.motion_summary import NO_TELEMETRY, summarize
from schemas.prompts import PROMPT_VERSION, parse_turn1
from streams.demo import scenario_frames, scenario_telemetry
from streams.settings import Settings
from streams.simulate import make_scenarios

pytestmark = pytest.mark.integration


Telemetry = list[TelemetrySample]
SCENARIOS = make_scenarios(77, 4, vehicles=2, duration=12.0)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [scenario_frames(s, Settings()).frames for s in SCENARIOS]


@pytest.fixture(scope="module")
def telemetry() -> list[Telemetry]:
    """Each clip's telemetry, t from the clip start, as the builder gives it to the worker."""
    samples = [scenario_telemetry(s) for s in SCENARIOS]
    summaries = [summarize(t) for t in samples]
    assert NO_TELEMETRY not in summaries and len(set(summaries)) == len(
        summaries
    )  # a motion text of its own each
    assert any("braking 0.5" in text for text in summaries)  # the late brake at a forward collision risk
    return samples


def test_vllm_and_transformers_give_the_same_greedy_chain_of_thought(
    trained_tiny_model: Path, vllm_engine, clips: list[np.ndarray], telemetry: list[Telemetry]
) -> None:
    transformers = TransformersEngine(trained_tiny_model, max_new_tokens=120)
    reference = transformers.run_batch(clips, telemetry)
    batched = vllm_engine.run_batch(clips, telemetry)
    assert [(r.turn1, r.turn2) for r in reference] == [(v.turn1, v.turn2) for v in batched]
    assert [(r.prompt_tokens, r.generated_tokens) for r in reference] == [
        (v.prompt_tokens, v.generated_tokens) for v in batched
    ]
    assert {r.prompt_version for r in [*reference, *batched]} == {PROMPT_VERSION} == {"cot-v2"}
    assert vllm_engine.model_version == TransformersEngine(trained_tiny_model, max_new_tokens=1).model_version
    for out in batched:
        parse_turn1(out.turn1)  # turn 1 is valid JSON of the taxonomy: structured outputs constrain it
        assert out.latency_ms > 0
    # The summary is in the prompt: the same clip without telemetry is asked in fewer tokens.
    assert vllm_engine.run_batch(clips[:1])[0].prompt_tokens < batched[0].prompt_tokens


def test_a_batch_gives_what_each_clip_gives_alone(
    vllm_engine, clips: list[np.ndarray], telemetry: list[Telemetry]
) -> None:
    alone = [vllm_engine.submit(c, t).result() for c, t in zip(clips[:2], telemetry[:2], strict=True)]
    together = vllm_engine.run_batch(clips[:2], telemetry[:2])
    assert [(a.turn1, a.turn2) for a in alone] == [(b.turn1, b.turn2) for b in together]


def test_the_vllm_server_over_http_gives_the_same_answers(
    trained_tiny_model: Path, vllm_server: str, clips: list[np.ndarray], telemetry: list[Telemetry]
) -> None:
    from streams.inference.engines.openai import OpenAIEngine

    reference = TransformersEngine(trained_tiny_model, max_new_tokens=120).run_batch(clips, telemetry)
    client = OpenAIEngine(vllm_server, str(trained_tiny_model), max_new_tokens=120)
    try:
        served = client.run_batch(clips, telemetry)  # concurrent requests: the server batches them
        one = client.submit(clips[2], telemetry[2]).result()  # the worker's path: one clip at a time
    finally:
        client.close()
    assert [(r.turn1, r.turn2, r.prompt_tokens, r.generated_tokens) for r in reference] == [
        (s.turn1, s.turn2, s.prompt_tokens, s.generated_tokens) for s in served
    ]
    assert (one.turn1, one.turn2, one.prompt_tokens) == (
        served[2].turn1,
        served[2].turn2,
        served[2].prompt_tokens,
    )
    assert {s.prompt_version for s in served} == {"cot-v2"}
    assert client.model_version == reference_version(trained_tiny_model)


def test_an_engine_told_cot_v1_asks_with_the_video_alone(
    trained_tiny_model: Path, clips: list[np.ndarray], telemetry: list[Telemetry]
) -> None:
    """cot-v1 (video only, to compare with cot-v2): the clip's telemetry is left out of the prompt."""
    reference = TransformersEngine(trained_tiny_model, max_new_tokens=120, prompt_version="cot-v1")
    v1 = reference.run_batch(clips[:2], telemetry[:2])
    assert [(o.turn1, o.turn2, o.prompt_tokens) for o in v1] == [
        (o.turn1, o.turn2, o.prompt_tokens) for o in reference.run_batch(clips[:2])
    ]
    assert {o.prompt_version for o in v1} == {"cot-v1"}


def reference_version(path: Path) -> str:
    from streams.inference.engines.base import model_version_of

    return model_version_of(path)
