"""The DEMO model's training set: about one trip in k without telemetry, the same trips every time."""

from __future__ import annotations

import json
from pathlib import Path

from streams.demo import write_training_set
from streams.settings import Settings
from streams.simulate import make_scenarios


def _silent(out: Path, every: int, tmp_path: Path) -> list[str]:
    scenarios = make_scenarios(3, 24, fleet_id="fleet-train", vehicles=4, duration=4.0)
    write_training_set(scenarios, out, Settings(home=tmp_path), no_telemetry_every=every)
    records = json.loads((out / "data.json").read_text())
    assert len(records) == 24 and all(r["telemetry"] or every for r in records)
    return [r["id"] for r in records if not r["telemetry"]]


def test_one_trip_in_k_goes_without_telemetry_and_always_the_same(tmp_path: Path) -> None:
    silent = _silent(tmp_path / "a", 4, tmp_path)
    assert 2 <= len(silent) <= 12  # about a quarter of 24
    assert _silent(tmp_path / "b", 4, tmp_path) == silent
    assert _silent(tmp_path / "c", 0, tmp_path) == []
