"""The benchmarks measure real work: the right number of clips, from real decoding (figures are not asserted)."""

from __future__ import annotations

from pathlib import Path

from streams.bench.clip import bench_clip
from streams.bench.join import bench_join, synthetic_segments
from streams.settings import Settings


def test_join_bench_joins_every_vehicle_into_max_length_clips() -> None:
    result = bench_join(Settings(), vehicles=3, per_vehicle=14)  # 140 s per vehicle: 64 + 64 + about 11
    assert result.segments == len(synthetic_segments(3, 14)) == 84
    assert result.clips == 3 * 3
    assert result.cpu_s > 0 and result.parse_cpu_s > 0


def test_clip_bench_builds_one_clip_per_trip_from_the_written_files(tmp_path: Path) -> None:
    result = bench_clip(tmp_path, Settings(), trips=2, trip_s=8.0)
    assert result.clips == 2 and result.segment_files == 4
    assert 7.0 < result.clip_seconds / 2 <= 8.5  # both cameras together: the driver clock runs 0.25 s ahead
    assert result.decode_cpu_s > 0 and result.build_cpu_s > 0


def test_infer_bench_times_every_clip_and_keeps_the_answers(tmp_path: Path) -> None:
    from streams.bench.infer import bench_infer

    (result,) = bench_infer(Settings(max_new_tokens=8), tmp_path, clips=3, engines=["transformers"])
    assert (result.engine, result.clips, result.batch, result.frames) == ("transformers", 3, 1, 24)
    assert len(result.latencies_ms) == 3 and all(ms > 0 for ms in result.latencies_ms)
    assert len(result.answers) == 3 and 0 < result.generated_tokens <= 3 * 2 * 8
    assert result.clips_per_s > 0 and result.p95_ms >= result.p50_ms


def test_join_state_stays_bounded_while_driving_and_is_deleted_when_idle() -> None:
    from streams.bench.join import bench_join_state

    hour, four = bench_join_state(Settings()), bench_join_state(Settings(), driving_s=4 * 3600)
    assert 0 < hour.table_bytes_mean <= hour.table_bytes_max < 16_000  # a few open windows, never the trip
    assert four.table_bytes_max <= hour.table_bytes_max * 1.1  # four times the driving, not more state
    assert hour.table_bytes_idle == four.table_bytes_idle == 0
    assert 55 < hour.windows_per_hour < 58 and hour.manifest_bytes_per_hour > 0
