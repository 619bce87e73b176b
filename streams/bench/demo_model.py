"""`drivecoach bench demo-model`: how well the DEMO model finds events on simulated trips it never saw (issue 19,
item 5), and what the telemetry adds.

Held-out trips come from their own seed and fleet (neither the training trips' nor the demo's), rendered as the
training trips are (`streams.demo.scenario_frames`, `scenario_telemetry`). Each trip is asked three ways and scored
per event type at the clip level (`schemas.scoring`, as the demo's report scores):

- `with telemetry`: the model in its own prompt version, with the trip's motion summary (cot-v2);
- `video only`: the same model, told "Vehicle motion: no telemetry." (what a camera without telemetry sends);
- `rules`: the telemetry rules alone (`schemas.motion_rules`), over the types they report.

The event-set micro F1 of `with telemetry` over every type is the issue's figure (docs/demo-model.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.generation import TransformersEngine
from schemas.motion_rules import detect
from schemas.prompts import answer_types
from schemas.scoring import EventScores, score_events
from schemas.taxonomy import EventType
from streams.demo import DEMO_MODEL_RECIPE, demo_model_settings, scenario_frames, scenario_telemetry
from streams.settings import Settings
from streams.simulate import make_scenarios

HELDOUT_SEED = 4242  # neither the training trips' (DEMO_MODEL_RECIPE["train_seed"]) nor the demo's
HELDOUT_FLEET = "fleet-heldout"


@dataclass(frozen=True)
class SourceScores:
    name: str
    scores: EventScores  # exact_clips: trips whose answer names exactly the true event types
    seconds_per_trip: float


def evaluate_demo_model(
    model: Path,
    settings: Settings,
    *,
    trips: int = 100,
    seed: int = HELDOUT_SEED,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, list[SourceScores]]:
    """(trips, scores per source) of `model` on `trips` held-out simulated trips."""
    settings = demo_model_settings(settings)
    scenarios = make_scenarios(
        seed,
        trips,
        fleet_id=HELDOUT_FLEET,
        vehicles=max(1, trips // 4),
        duration=float(DEMO_MODEL_RECIPE["trip_s"]),
    )
    truth = [{e.type for e in s.events} for s in scenarios]
    engine = TransformersEngine(model, threads=1)
    answers: dict[str, list[set[EventType]]] = {"with telemetry": [], "video only": []}
    seconds = dict.fromkeys(answers, 0.0)
    telemetry = [scenario_telemetry(s) for s in scenarios]
    for i, (s, samples) in enumerate(zip(scenarios, telemetry, strict=True)):
        frames = scenario_frames(s, settings).frames
        for name, given in (("with telemetry", samples), ("video only", [])):
            started = time.perf_counter()
            answers[name].append(answer_types(engine.run_cot(frames, given).turn1) or set())
            seconds[name] += time.perf_counter() - started
        if progress is not None:
            progress(i + 1)
    started = time.perf_counter()
    rules = [{e.type for e in detect(samples)} for samples in telemetry]
    seconds["rules"] = time.perf_counter() - started
    answers["rules"] = rules
    return trips, [
        SourceScores(
            name,
            score_events(list(zip(predicted, truth, strict=True))),
            seconds[name] / trips,
        )
        for name, predicted in answers.items()
    ]
