"""The promotion gate's paired bootstrap: one clip's luck is not a better model, several clips are."""

from __future__ import annotations

import pytest

from schemas.messages import DetectedEvent
from schemas.prompts import format_turn1
from schemas.registry import evaluation_summary
from schemas.taxonomy import EventType, View
from training.evaluate import evaluate
from training.retrain import RetrainJob, judge
from training.significance import clip_counts, win_rate

RIGHT, MISSED = (1, 0, 0), (0, 0, 1)  # one true event type per clip: found, or missed


def _clips(right: int, missed: int) -> list[tuple[int, int, int]]:
    return [RIGHT] * right + [MISSED] * missed


def test_clip_counts_are_the_micro_counts_of_one_clip() -> None:
    assert clip_counts({"phone_use", "harsh_turn"}, {"phone_use", "rolling_stop"}) == (1, 1, 1)
    assert clip_counts(set(), set()) == (0, 0, 0)


def test_a_candidate_that_changes_nothing_never_wins() -> None:
    clips = _clips(25, 5)
    assert win_rate(clips, clips) == 0.0


def test_one_clip_better_wins_only_the_resamples_that_draw_it() -> None:
    # Out of 30 clips, a resample holds a given clip with probability 1 - (29/30)^30 = 0.638.
    production, candidate = _clips(25, 5), [RIGHT, *_clips(25, 4)]
    assert win_rate(production, candidate) == pytest.approx(0.638, abs=0.03)


def test_three_clips_better_and_none_worse_is_convincing() -> None:
    production, candidate = _clips(25, 5), [RIGHT, RIGHT, RIGHT, *_clips(25, 2)]
    assert win_rate(production, candidate) == pytest.approx(1 - (27 / 30) ** 30, abs=0.02)  # 0.958


def test_gains_that_losses_cancel_do_not_convince() -> None:
    production = [MISSED, MISSED, RIGHT, RIGHT, *_clips(26, 0)]
    candidate = [RIGHT, RIGHT, MISSED, MISSED, *_clips(26, 0)]
    assert win_rate(production, candidate) < 0.6


def test_the_same_seed_gives_the_same_rate() -> None:
    production, candidate = _clips(20, 10), [RIGHT, RIGHT, *_clips(20, 8)]
    assert win_rate(production, candidate, seed=3) == win_rate(production, candidate, seed=3)


def test_clips_must_pair_up() -> None:
    with pytest.raises(ValueError, match="same non-empty"):
        win_rate(_clips(3, 0), _clips(2, 0))
    with pytest.raises(ValueError, match="same non-empty"):
        win_rate([], [])


def _answers(found: int, missed: int) -> list[tuple[str, str]]:
    turn = format_turn1([DetectedEvent(type=EventType.PHONE_USE, view=View.DRIVER, start=1.0, end=2.0)])
    return [(turn, "Put the phone away.")] * found + [(format_turn1([]), "Put the phone away.")] * missed


def test_judge_promotes_a_candidate_better_on_enough_clips() -> None:
    truth = _answers(30, 0)
    production = evaluate(_answers(24, 6), truth)
    assert production.clip_counts == [(1, 0, 0)] * 24 + [(0, 0, 1)] * 6
    verdict = judge(RetrainJob(), production, evaluate(_answers(28, 2), truth))
    assert verdict.promote and verdict.reason == ""
    assert verdict.confidence is not None and verdict.confidence > 0.95


def test_judge_rejects_one_clips_luck_and_says_why() -> None:
    truth = _answers(30, 0)
    verdict = judge(RetrainJob(), evaluate(_answers(24, 6), truth), evaluate(_answers(25, 5), truth))
    assert not verdict.promote
    assert verdict.after > verdict.before
    assert "better in only" in verdict.reason and "of the 30 held-out clips" in verdict.reason
    # Without the check (--min-confidence 0) the same candidate is promoted on its point estimate.
    assert judge(
        RetrainJob(min_confidence=0.0), evaluate(_answers(24, 6), truth), evaluate(_answers(25, 5), truth)
    ).promote


def test_judge_rejects_a_candidate_not_above_the_margin_whatever_its_confidence() -> None:
    truth = _answers(30, 0)
    verdict = judge(
        RetrainJob(margin=0.2), evaluate(_answers(24, 6), truth), evaluate(_answers(28, 2), truth)
    )
    assert not verdict.promote and "does not beat production's" in verdict.reason


def test_model_list_names_the_confidence() -> None:
    judged = {
        "metric": "event_f1",
        "margin": 0.0,
        "min_confidence": 0.9,
        "confidence": 0.964,
        "base": {"event_f1": 0.812},
        "candidate": {"event_f1": 0.829},
    }
    assert evaluation_summary(judged) == "event_f1 0.812 -> 0.829, better in 96% of resamples"
    unsure = {**judged, "confidence": 0.64, "rejected_because": "..."}
    assert (
        evaluation_summary(unsure) == "event_f1 0.812 -> 0.829, better in 64% of resamples (< 90%): rejected"
    )
