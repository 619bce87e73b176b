"""The streaming join checked against the whole footage with an oracle that shares no code with it
(tests/footage.py, written from the rules in README.md "Join semantics"): the properties in test_join.py compare
with `expected_clips`, which is built from the join's own functions; these state what the clips must be.

- every uploaded second of footage of each camera lies in exactly one clip of its vehicle and driver (slivers
  shorter than one sampled frame excepted), and the clip spans exactly that driver's footage in its window;
- clip ids are unique, one per vehicle, window and driver, and each clip lies inside one 64-s window;
- no clip holds footage of another driver (a driver change splits clips; a missing id is never filled in);
- revisions of a clip only add segments;
- the clips depend on the set of uploads only: any arrival times, any number of re-sent copies, same clips.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.joiner.join import JoinRules
from tests.footage import Emitted, footage_violations, newest, revision_violations
from tests.strategies import RULES, Event, Fleet, fleets, seg, upload
from tests.unit.test_join import run, with_ticks


def emitted(events: list[Event], rules: JoinRules = RULES) -> list[Emitted]:
    """Every clip the streaming join emits for these events, in emission order (drained to the end of the trips)."""
    return [Emitted.of_plan(p) for p in run(events, rules).plans]


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_every_second_of_footage_lies_in_exactly_one_clip_of_its_driver(fleet: Fleet) -> None:
    clips = emitted(fleet.in_arrival_order())
    assert footage_violations(fleet.segments, newest(clips), RULES) == [], fleet.patterns
    assert revision_violations(clips, RULES) == [], fleet.patterns


@settings(max_examples=200, deadline=None)
@given(fleets(duplicates=False), st.randoms(use_true_random=False), st.integers(1, 3))
def test_any_arrival_times_and_resent_copies_give_the_clips_of_the_footage(
    fleet: Fleet, rnd: random.Random, copies: int
) -> None:
    """Each segment uploaded one to `copies` times, each copy at its own arrival time after the segment was
    recorded (seconds, minutes, beyond the idle time, hours): the same clips as the fleet's own cadence."""
    events: list[Event] = []
    for s in fleet.segments:
        for _ in range(rnd.randint(1, copies)):
            delay = rnd.choice(
                [
                    rnd.uniform(0.3, 3.0),
                    rnd.uniform(3.0, 60.0),
                    rnd.uniform(60.0, 2 * RULES.vehicle_idle_s),
                    rnd.uniform(3600.0, 6 * 3600.0),
                ]
            )
            events.append((round(s.end_ts + delay, 3), s.camera, upload(s)))
    clips = emitted(with_ticks(events))
    assert footage_violations(fleet.segments, newest(clips), RULES) == []
    assert revision_violations(clips, RULES) == []
    as_recorded = newest(emitted(fleet.in_arrival_order()))
    assert sorted(newest(clips), key=lambda c: c.clip_id) == sorted(as_recorded, key=lambda c: c.clip_id)


def test_the_oracle_catches_clips_that_break_the_rules() -> None:
    """The oracle itself, on footage whose clips are known by hand (a driver change at 30 s, a trip across a window
    boundary), and clips a broken join might make of it."""
    base = 64 * 1000.0
    footage = [
        seg("road", base + 0, base + 30, 1, "ann"),
        seg("driver", base + 0, base + 30, 1, "ann"),
        seg("road", base + 30, base + 70, 2, "bob"),
    ]
    ann, bob = frozenset(s.segment_id for s in footage[:2]), frozenset({footage[2].segment_id})
    right = [
        Emitted("a", "v", "ann", base + 0, base + 30, frozenset({"road", "driver"}), ann, 2),
        Emitted("b", "v", "bob", base + 30, base + 64, frozenset({"road"}), bob, 1),
        Emitted("c", "v", "bob", base + 64, base + 70, frozenset({"road"}), bob, 1),
    ]
    assert footage_violations(footage, right, RULES) == []
    broken = {
        "crosses the driver change": {0: {"end": base + 40}},
        "crosses the window boundary": {1: {"end": base + 70}},
        "loses a second": {2: {"start": base + 65}},
        "repeats an id": {2: {"clip_id": "b"}},
        "holds another driver's footage": {0: {"segment_ids": ann | bob}},
        "names a camera without footage": {1: {"views": frozenset({"road", "driver"})}},
        "is missing": {},
    }
    for what, changes in broken.items():
        clips = [replace(c, **changes.get(i, {})) for i, c in enumerate(right)]
        if not changes:
            clips = clips[:2]
        assert footage_violations(footage, clips, RULES), what
    assert revision_violations([right[1], replace(right[1], revision=0)], RULES)
    assert revision_violations([right[1], replace(right[1], revision=2, segment_ids=ann)], RULES)
