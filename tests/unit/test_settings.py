"""Settings that cannot work are refused at start-up, in one sentence."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.joiner.join import JoinRules
from streams.settings import Settings


def test_the_defaults_fit_real_fleets() -> None:
    rules = JoinRules.from_settings(Settings())
    assert (rules.clip_max_s, rules.vehicle_idle_s, rules.settle_s) == (64.0, 600.0, 30.0)
    assert (
        Settings().max_segment_s <= rules.vehicle_idle_s
    )  # a camera uploading 5-min segments never looks idle


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"settle_s": 700.0}, "settle_s must be shorter than vehicle_idle_s"),
        ({"max_segment_age_s": 300.0}, "max_segment_age_s must exceed vehicle_idle_s"),
        ({"skew_tolerance_s": 64.0}, "skew_tolerance_s must be shorter than clip_max_s"),
        ({"clip_min_s": 65.0}, "clip_min_s must not exceed clip_max_s"),
        ({"vehicle_idle_s": 0.0}, "greater than 0"),
    ],
)
def test_combinations_that_cannot_work_are_refused(changes: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**changes)
