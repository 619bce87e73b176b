"""The paper's scores on known inputs: identical answers score top, diverse ones have low self-BLEU, events count per type."""

from __future__ import annotations

import pytest
import sacrebleu  # noqa: F401 - `make test` installs the train extra: a missing or broken one must fail

from schemas.messages import DetectedEvent
from schemas.prompts import format_turn1
from schemas.taxonomy import TAXONOMY, EventType
from training.evaluate import evaluate, repeated_4gram_share, self_bleu


def answer(*types: EventType) -> str:
    return format_turn1([DetectedEvent(type=t, view=TAXONOMY[t].view, start=0, end=2) for t in types])


def test_self_bleu_and_repeated_4grams_measure_sameness() -> None:
    same = ["keep a safe distance from the car ahead"] * 3
    varied = [
        "keep a safe distance from the car ahead",
        "put your phone away while driving now",
        "fasten your seatbelt before you start",
    ]
    assert self_bleu(same) == pytest.approx(100.0) and self_bleu(varied) < 10.0
    assert repeated_4gram_share(same) == 1.0 and repeated_4gram_share(varied) == 0.0


def test_scores_reward_the_right_answers() -> None:
    refs = [
        (answer(EventType.PHONE_USE), "Put the phone away while driving."),
        (answer(), "Keep up the good driving."),
        (answer(EventType.NO_SEATBELT, EventType.DROWSINESS), "Fasten your seatbelt and take a break."),
    ]
    perfect = evaluate(refs, refs)
    assert perfect.bleu == pytest.approx(100.0) and perfect.bertscore_f1 == pytest.approx(1.0, abs=1e-4)
    assert (perfect.event_precision, perfect.event_recall, perfect.exact_event_sets, perfect.valid_share) == (
        1,
        1,
        1,
        1,
    )

    wrong = [
        (answer(EventType.DROWSINESS), "Keep up the good driving."),
        ("{oops", "Keep up the good driving."),
        (answer(EventType.NO_SEATBELT), "Keep up the good driving."),
    ]
    scored = evaluate(wrong, refs)
    assert scored.bleu < perfect.bleu and scored.bertscore_f1 < perfect.bertscore_f1
    assert scored.valid_share == pytest.approx(2 / 3) and scored.exact_event_sets == 0
    assert scored.per_type["no_seatbelt"]["tp"] == 1 and scored.per_type["phone_use"]["fn"] == 1
    assert scored.per_type["phone_use"]["precision"] is None  # never predicted: undefined, stored as null
    assert scored.per_type["drowsiness"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 1,
        "fn": 1,
    }
    assert scored.self_bleu > perfect.self_bleu  # one instruction for everything: language bias
