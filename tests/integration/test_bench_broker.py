"""`drivecoach bench join` through the broker: the real Tansu broker, a Faust joiner process and the baseline agent
over the same backlog; every clip plan back."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.join import bench_join
from streams.bench.join_broker import bench_join_broker
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_broker_join_bench_gets_back_every_clip_the_oracle_expects(broker, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=broker.bootstrap, one_record_per_batch=True)
    result = bench_join_broker(settings, tmp_path, vehicles=3, per_vehicle=14, timeout_s=120)
    assert result.segments == 3 * 2 * 14
    assert result.expected_clips == bench_join(settings, vehicles=3, per_vehicle=14).clips == 9
    assert result.clips == result.expected_clips and result.unexpected_clips == 0
    for run in (
        result.joiner,
        result.joiner_with_probes,
        result.baseline,
    ):  # each timed over the backlog by its own clock
        assert run.counted == result.segments and run.wall_s > 0 and run.cpu_s is not None  # Linux /proc
