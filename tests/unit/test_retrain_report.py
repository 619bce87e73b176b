"""The retraining run's before/after lines: per event type, production's F1 (precision, recall) -> the candidate's."""

from __future__ import annotations

from schemas.messages import DetectedEvent
from schemas.prompts import format_turn1
from schemas.registry import evaluation_summary
from schemas.taxonomy import EventType, View
from training.evaluate import evaluate
from training.retrain import before_after


def _turn1(*types: EventType) -> str:
    views = {EventType.HARSH_TURN: View.ROAD, EventType.PHONE_USE: View.DRIVER}
    return format_turn1([DetectedEvent(type=t, view=views[t], start=1.0, end=2.0) for t in types])


def test_each_type_before_and_after_and_the_micro_f1() -> None:
    truth = [(_turn1(EventType.HARSH_TURN), "Slow down."), (_turn1(EventType.PHONE_USE), "Put it away.")]
    base = evaluate([(_turn1(), "Slow down."), (_turn1(EventType.PHONE_USE), "Put it away.")], truth)
    candidate = evaluate(truth, truth)
    assert (base.event_f1, candidate.event_f1) == (2 / 3, 1.0)
    assert (
        before_after(base, candidate)
        == [
            "event type  production -> candidate",
            "harsh_turn  F1 0.00 (P - R 0.00) -> F1 1.00 (P 1.00 R 1.00)",  # never named before: precision undefined
            "phone_use   F1 1.00 (P 1.00 R 1.00) -> F1 1.00 (P 1.00 R 1.00)",
            "all (micro)  F1 0.667 -> 1.000",
        ]
    )


def test_model_list_says_how_each_candidate_was_judged() -> None:
    judged = {
        "metric": "event_f1",
        "margin": 0.0,
        "base": {"event_f1": 0.9167},
        "candidate": {"event_f1": 0.9322},
    }
    assert evaluation_summary(judged) == "event_f1 0.917 -> 0.932"
    rejected = {
        **judged,
        "margin": 0.02,
        "rejected_because": "event_f1 0.9322 does not beat production's 0.9167",
    }
    assert evaluation_summary(rejected) == "event_f1 0.917 -> 0.932, not above 0.937: rejected"
    assert evaluation_summary({}) == ""  # deployed by hand: no run judged it
