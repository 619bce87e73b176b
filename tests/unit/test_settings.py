"""Settings that cannot work are refused at start-up, in one sentence."""

from __future__ import annotations

from dataclasses import fields

import pytest
from pydantic import ValidationError

from streams.joiner.join import JoinRules
from streams.joiner.segments import TimeLimits
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


@pytest.mark.parametrize(
    ("rules_type", "env"),
    [
        (
            JoinRules,
            {
                "CLIP_MAX_S": "60",
                "CLIP_MIN_S": "1.5",
                "SKEW_TOLERANCE_S": "2",
                "EVENT_GRACE_S": "21",
                "SINGLE_VIEW_CLIPS": "false",
                "VEHICLE_IDLE_S": "601",
                "SETTLE_S": "31",
            },
        ),
        (TimeLimits, {"MAX_CLOCK_AHEAD_S": "299", "MAX_SEGMENT_AGE_S": "86401", "MAX_SEGMENT_S": "120"}),
    ],
)
def test_each_rule_is_the_setting_and_the_variable_of_its_name(
    rules_type: type, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One name per concept end to end: DRIVECOACH_<NAME> -> Settings.<name> -> <rules>.<name>."""
    assert {f.name.upper() for f in fields(rules_type)} == set(env)
    for name, value in env.items():
        monkeypatch.setenv(f"DRIVECOACH_{name}", value)
    rules = rules_type.from_settings(Settings())
    for f in fields(rules_type):
        given = env[f.name.upper()]
        expected = given == "true" if given in ("true", "false") else float(given)
        assert getattr(rules, f.name) == expected
        assert getattr(rules, f.name) != f.default  # the variable, not the default, reached the rule
