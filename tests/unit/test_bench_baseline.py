"""The worker bench's baseline does the worker's work: an answer that fails validation is asked for once more, and
a second invalid one is kept (pure logic, an engine double that answers at once)."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from schemas.generation import CotOutput
from schemas.prompts import format_turn1
from streams.bench.worker import engine_alone_batches, engine_alone_continuous


class Answers:
    """Clip k's n-th answer is valid when `valid[k][n]` (the clip's id is its first pixel)."""

    model_version = "double"

    def __init__(self, valid: list[list[bool]]) -> None:
        self.valid, self.asked = valid, [0] * len(valid)

    def _answer(self, frames: np.ndarray) -> CotOutput:
        k = int(frames[0, 0, 0, 0])
        ok = self.valid[k][self.asked[k]]
        self.asked[k] += 1
        return CotOutput(
            turn1=format_turn1([]) if ok else '{"events": [',
            turn2="Keep it up.",
            prompt_tokens=1,
            generated_tokens=1,
            latency_ms=1.0,
        )

    def submit(self, frames: np.ndarray, telemetry=()) -> Future[CotOutput]:
        future: Future[CotOutput] = Future()
        future.set_result(self._answer(frames))
        return future

    def run_batch(self, clips: list[np.ndarray], telemetry=None) -> list[CotOutput]:
        return [self._answer(frames) for frames in clips]


def _clips(n: int) -> list[np.ndarray]:
    return [np.full((2, 4, 4, 3), k, dtype=np.uint8) for k in range(n)]


def test_the_continuous_baseline_asks_an_invalid_answer_once_more() -> None:
    engine = Answers([[True], [False, True], [False, False]])
    run, answers = engine_alone_continuous(engine, _clips(3), concurrency=2)  # type: ignore[arg-type]
    assert engine.asked == [1, 2, 2] and run.asks == 5 and run.asks_per_clip == 5 / 3
    assert [a.turn1.startswith('{"events": [') for a in answers] == [
        False,
        False,
        True,
    ]  # the second invalid kept
    assert len(run.latencies_s) == 3


def test_the_batch_baseline_asks_a_batchs_invalid_answers_together() -> None:
    engine = Answers([[False, True], [True], [False, False], [True]])
    run, answers = engine_alone_batches(engine, _clips(4), batch=2)  # type: ignore[arg-type]
    assert engine.asked == [2, 1, 2, 1] and run.asks == 6 and len(answers) == 4
