"""`drivecoach bench recovery` in small: trials that SIGKILL the joiner, the clip builder or the worker while a fleet uploads in mixed
cadences, checked against the oracle in Postgres (the closing note of issue 13 gives a run with N=100)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from streams.bench.recovery import arrival_schedule, run_soak
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_kills_during_mixed_cadences_lose_nothing_and_double_nothing(
    broker, database_url, trained_tiny_model: Path, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        one_record_per_batch=True,
        database_url=database_url,
        model=str(trained_tiny_model),
        max_new_tokens=60,
    )
    engine = create_engine(database_url)
    results = run_soak(settings, sessionmaker(engine), tmp_path, trials=3, seed=3, vehicles=5)
    engine.dispose()
    assert [r.killed for r in results] == ["joiner", "builder", "worker"]
    for r in results:
        assert r.ok, r
        assert r.expected_clips > 0 and r.dead_letters == 2  # the two wrong uploads, and nothing else


def test_the_patterns_are_what_they_say() -> None:
    import itertools
    import random

    from tests.strategies import seg, upload

    trips = [
        [upload(seg(c, 64.0 * k + t, 64.0 * k + t + 4)) for t in (1.0, 5.0, 9.0) for c in ("road", "driver")]
        for k in range(3)
    ]
    rng = random.Random(0)
    realtime = arrival_schedule(trips, "realtime", rng, t0=0.0, speed=8.0, idle_s=4.0)
    assert all(abs(at - m.end_ts / 8.0) < 0.5 for at, m in realtime)
    backlog = arrival_schedule(trips, "backlog", rng, t0=0.0, speed=8.0, idle_s=4.0)
    first_trip = [at for at, m in backlog if m.start_ts < 64]
    assert min(first_trip) > max(at for at, m in backlog if m.start_ts >= 64)  # yesterday after today
    burst = arrival_schedule(trips, "burst", rng, t0=0.0, speed=8.0, idle_s=4.0)
    assert len({at for at, _ in burst}) == 3  # one moment per trip
    outage = arrival_schedule(trips, "outage", rng, t0=0.0, speed=8.0, idle_s=4.0)
    assert (
        max(b - a for a, b in itertools.pairwise(sorted(at for at, _ in outage))) > 7.5
    )  # twice the idle time
