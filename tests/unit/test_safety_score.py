"""The driver safety score's formula (streams/console/safety_score.py), without a database."""

from __future__ import annotations

from datetime import date

import pytest

from schemas.taxonomy import TAXONOMY, EventType
from streams.console.safety_score import COUNTED_STATUSES, ScoreSettings, default_weights, week_score

WEEK = date(2026, 11, 23)


def test_the_docstrings_example_a_phone_call_in_150_km_scores_80() -> None:
    score = week_score("d", WEEK, {"phone_use": 1}, km=150.0, hours=3.0, settings=ScoreSettings())
    assert score is not None
    assert (score.score, score.per, score.points) == (80, "100 km", 3.0)
    assert score.formula == "100 - 10 x 3 points / 1.5 x 100 km = 80"


def test_default_weights_are_the_severities() -> None:
    assert default_weights() == {t.value: float(TAXONOMY[t].severity) for t in EventType}


def test_no_counted_event_scores_100_and_no_driving_has_no_score() -> None:
    assert week_score("d", WEEK, {}, km=80.0, hours=2.0, settings=ScoreSettings()).score == 100
    assert week_score("d", WEEK, {"phone_use": 2}, km=None, hours=0.0, settings=ScoreSettings()) is None


def test_unknown_distance_falls_back_to_driving_hours() -> None:
    score = week_score("d", WEEK, {"speeding": 2}, km=None, hours=4.0, settings=ScoreSettings())
    weight = TAXONOMY[EventType.SPEEDING].severity
    assert score.per == "hour" and score.rate == pytest.approx(2 * weight / 4.0) and not score.floored
    assert score.score == round(100 - 20 * 2 * weight / 4.0)
    zero_km = week_score("d", WEEK, {"speeding": 2}, km=0.0, hours=4.0, settings=ScoreSettings())
    assert zero_km.per == "hour"


def test_the_score_never_goes_below_zero() -> None:
    assert week_score("d", WEEK, {"drowsiness": 40}, km=100.0, hours=2, settings=ScoreSettings()).score == 0


def test_a_week_of_little_driving_counts_as_the_least_exposure() -> None:
    """One event in a few minutes of driving is little evidence: the rate is over at least 50 km (or 1 hour)."""
    short = week_score("d", WEEK, {"phone_use": 1}, km=5.0, hours=0.1, settings=ScoreSettings())
    assert (short.exposure, short.floored, short.score) == (0.5, True, 40)  # 100 - 10 x 3 / 0.5
    brief = week_score("d", WEEK, {"phone_use": 1}, km=None, hours=0.1, settings=ScoreSettings())
    assert (brief.exposure, brief.floored, brief.score) == (1.0, True, 40)  # 100 - 20 x 3 / 1


def test_a_fleets_weights_and_penalty_replace_the_defaults() -> None:
    settings = ScoreSettings.with_overrides({"phone_use": 5.0}, penalty_per_100km=2.0)
    score = week_score("d", WEEK, {"phone_use": 2, "speeding": 1}, km=200.0, hours=4.0, settings=settings)
    speeding = float(TAXONOMY[EventType.SPEEDING].severity)
    assert score.points == 10.0 + speeding
    assert score.score == round(100 - 2.0 * (10.0 + speeding) / 2.0)
    assert settings.penalty_per_hour == 20.0  # the one it did not set stays the default


def test_the_explanation_adds_up_to_the_points_heaviest_first() -> None:
    counts = {"smoking": 1, "forward_collision_risk": 2, "following_distance": 3}
    score = week_score("d", WEEK, counts, km=300.0, hours=5.0, settings=ScoreSettings())
    assert sum(line.points for line in score.lines) == score.points
    assert [line.weight for line in score.lines] == sorted(
        (line.weight for line in score.lines), reverse=True
    )
    assert {line.type: line.events for line in score.lines} == counts


def test_the_fact_tables_triggers_count_the_same_statuses() -> None:
    """Migration 0021's triggers spell the counted statuses in SQL: they must stay the formula's."""
    from importlib import import_module

    migration = import_module("schemas.migrations.versions.0021_driver_week_facts")
    assert migration.COUNTED == "(" + ", ".join(f"'{s}'" for s in COUNTED_STATUSES) + ")"


def test_a_window_at_the_calendars_ends_is_whole_weeks_not_an_overflow() -> None:
    from datetime import date

    from streams.console.reports import Filters, score_weeks

    weeks = score_weeks(Filters(fleet="f", since=date(1, 1, 2), until=date(9999, 12, 31)))
    assert weeks.since == date(1, 1, 1) and weeks.until == date.max  # was an OverflowError: a 500
