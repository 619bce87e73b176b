"""The telemetry rules as an evaluation source (issue 19, item 3): per-type precision and recall of `detect` alone
against reference events, scored as a model is, and side by side with the model's sources."""

from __future__ import annotations

import pytest

from schemas.messages import TelemetrySample
from schemas.motion_rules import THRESHOLDS, G
from schemas.taxonomy import EventType
from training.evaluate import compare_sources, rule_predictions, rules_event_scores, type_scores

B, T, S = EventType.HARSH_BRAKING, EventType.HARSH_TURN, EventType.SPEEDING


def _clip(*, brake_g: float = 0.0, yaw_dps: float = 0.0, speed: float = 60.0, limit: float | None = None):
    """20 s at `speed` km/h; at 5-6 s a braking of `brake_g` and a yaw rate of `yaw_dps`."""
    return [
        TelemetrySample(
            t=float(t),
            speed_kmh=speed,
            accel_ms2=-brake_g * G if t in (5, 6) else 0.0,
            yaw_rate_dps=yaw_dps if t in (5, 6) else 0.0,
            speed_limit_kmh=limit,
        )
        for t in range(20)
    ]


# (telemetry, the reference's event types)
CLIPS = [
    (_clip(brake_g=0.5), {B}),  # a harsh brake: found
    (
        _clip(brake_g=0.5),
        {EventType.FORWARD_COLLISION_RISK},
    ),  # braking for a risk the reference names otherwise
    (_clip(yaw_dps=30.0), {T}),  # a harsh turn: found
    (_clip(brake_g=0.3), {B}),  # under the passenger threshold: missed
    (
        _clip(speed=80.0, limit=60.0),
        {S, EventType.PHONE_USE},
    ),  # speeding, limit known: found; the phone is not theirs
    (_clip(), set()),
]
TELEMETRY = [c[0] for c in CLIPS]
REFERENCES = [c[1] for c in CLIPS]


def test_the_rules_answer_per_clip() -> None:
    assert rule_predictions(TELEMETRY) == [{B}, {B}, {T}, set(), {S}, set()]
    assert rule_predictions(TELEMETRY, THRESHOLDS["sensitive"])[3] == {
        B
    }  # 0.3 g is harsh for a cautious fleet
    assert rule_predictions([_clip(speed=80.0)], speed_limit_kmh=60.0) == [{S}]


def test_rules_only_precision_and_recall_per_type() -> None:
    scores = rules_event_scores(TELEMETRY, REFERENCES)
    assert list(scores) == ["harsh_acceleration", "harsh_braking", "harsh_turn", "speeding", "all"]
    assert scores["harsh_braking"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "tp": 1, "fp": 1, "fn": 1}
    assert scores["harsh_turn"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert scores["speeding"]["tp"] == 1
    assert scores["harsh_acceleration"] == {
        "precision": None,
        "recall": None,
        "f1": None,
        "tp": 0,
        "fp": 0,
        "fn": 0,
    }
    assert scores["all"] == {
        "precision": 0.75,
        "recall": 0.75,
        "f1": 0.75,
        "tp": 3,
        "fp": 1,
        "fn": 1,
    }  # phone use not counted
    sensitive = rules_event_scores(TELEMETRY, REFERENCES, THRESHOLDS["sensitive"])
    assert sensitive["harsh_braking"]["recall"] == 1.0


def test_sources_side_by_side_are_scored_alike() -> None:
    video = [{B}, None, set(), {B}, {EventType.PHONE_USE}, {T}]  # None: an invalid answer
    with_telemetry = [{B}, {EventType.FORWARD_COLLISION_RISK}, {T}, {B}, {S, EventType.PHONE_USE}, set()]
    table = compare_sources(
        {"video only": video, "rules only": rule_predictions(TELEMETRY), "with telemetry": with_telemetry},
        REFERENCES,
    )
    assert list(table) == ["harsh_acceleration", "harsh_braking", "harsh_turn", "speeding", "all"]
    assert table["harsh_braking"]["video only"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "tp": 2,
        "fp": 0,
        "fn": 0,
    }
    assert table["harsh_turn"]["video only"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 1,
        "fn": 1,
    }
    assert table["all"]["rules only"] == rules_event_scores(TELEMETRY, REFERENCES)["all"]
    assert table["all"]["with telemetry"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "tp": 4,
        "fp": 0,
        "fn": 0,
    }
    # over every type, phone use counts as well
    assert type_scores(with_telemetry, REFERENCES)["phone_use"]["tp"] == 1
    with pytest.raises(ValueError):
        type_scores(video[:2], REFERENCES)
