"""`bench demo-model` on the session's tiny model: the held-out trips are asked with and without their motion summary
and scored per type against the simulator's truth; the rules are scored on the same trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.motion_rules import detect
from streams.bench.demo_model import HELDOUT_FLEET, evaluate_demo_model
from streams.cli import app
from streams.demo import DEMO_MODEL_RECIPE, scenario_telemetry
from streams.settings import Settings
from streams.simulate import make_scenarios

pytestmark = pytest.mark.integration


def test_scores_each_source_on_the_same_held_out_trips(trained_tiny_model: Path, tmp_path: Path) -> None:
    trips, sources = evaluate_demo_model(trained_tiny_model, Settings(home=tmp_path), trips=4, seed=31)
    assert trips == 4 and [s.name for s in sources] == ["with telemetry", "video only", "rules"]
    scenarios = make_scenarios(
        31, 4, fleet_id=HELDOUT_FLEET, vehicles=1, duration=float(DEMO_MODEL_RECIPE["trip_s"])
    )
    truth = [{e.type for e in s.events} for s in scenarios]
    for source in sources:
        s = source.scores
        assert s.clips == 4
        # Every true event is found or missed by each source: the scores cover the truth exactly.
        assert sum(t.tp + t.fn for t in s.per_type.values()) == sum(len(t) for t in truth)
    rules = sources[2].scores
    found = [{e.type for e in detect(scenario_telemetry(s))} for s in scenarios]
    assert sum(t.tp + t.fp for t in rules.per_type.values()) == sum(len(f) for f in found)


def test_the_command_prints_per_type_scores_and_the_f1(trained_tiny_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "demo-model", "--model", str(trained_tiny_model), "--trips", "2", "--seed", "5"],
        env={"DRIVECOACH_HOME": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    assert "micro F1" in result.output and "with telemetry" in result.output and "rules" in result.output
