"""Event detection scores at clip level: per event type precision and recall of the structured turn-1 answers.

Shared by the demo's report (streams) and the evaluation of a training run (training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.taxonomy import EventType


@dataclass
class TypeScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        return (
            2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else float("nan")
        )


@dataclass
class EventScores:
    per_type: dict[EventType, TypeScore] = field(default_factory=dict)
    exact_clips: int = 0
    clips: int = 0

    @property
    def micro(self) -> TypeScore:
        total = TypeScore()
        for s in self.per_type.values():
            total.tp, total.fp, total.fn = total.tp + s.tp, total.fp + s.fp, total.fn + s.fn
        return total


def score_events(pairs: list[tuple[set[EventType], set[EventType]]]) -> EventScores:
    """Clip-level scoring: an event type counts as found when the clip's prediction names it (times ignored)."""
    scores = EventScores(clips=len(pairs))
    for predicted, truth in pairs:
        for t in predicted | truth:
            s = scores.per_type.setdefault(t, TypeScore())
            if t in predicted and t in truth:
                s.tp += 1
            elif t in predicted:
                s.fp += 1
            else:
                s.fn += 1
        scores.exact_clips += predicted == truth
    return scores
