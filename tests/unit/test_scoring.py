"""Clip-level precision and recall of event types."""

import math

from schemas.scoring import score_events
from schemas.taxonomy import EventType as E


def test_scores_count_true_and_false_positives_and_misses():
    s = score_events(
        [
            ({E.PHONE_USE}, {E.PHONE_USE}),
            ({E.PHONE_USE, E.DROWSINESS}, {E.PHONE_USE}),
            (set(), {E.LANE_DEPARTURE}),
            (set(), set()),
        ]
    )
    assert (s.per_type[E.PHONE_USE].tp, s.per_type[E.PHONE_USE].fp, s.per_type[E.PHONE_USE].fn) == (2, 0, 0)
    assert s.per_type[E.DROWSINESS].precision == 0.0
    assert s.per_type[E.LANE_DEPARTURE].recall == 0.0
    assert math.isnan(s.per_type[E.LANE_DEPARTURE].precision)
    m = s.micro
    assert (m.tp, m.fp, m.fn) == (2, 1, 1)
    assert s.exact_clips == 2 and s.clips == 4
