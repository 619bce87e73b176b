"""Join state survives: a joiner killed with SIGKILL mid-stream and restarted, and two joiners sharing the partitions
while one joins late (a rebalance), give exactly the oracle's clips. The fleet keeps uploading at its own pace
throughout (a replay at 2x real time). Clip ids are deterministic, so a clip sent again after a crash keeps its id;
what must never happen is a clip lost, or one cut differently (a different id) because state or time was lost."""

from __future__ import annotations

import signal
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.messages import SegmentMessage
from streams.blobs import LocalBlobStore
from streams.demo import _spawn, _stop, expected_clips, settings_env, to_messages
from streams.producer import ensure_topics
from streams.settings import Settings
from streams.simulate import make_scenarios, write_segments
from tests.integration.harness import Replay, wait_for_clips

pytestmark = pytest.mark.integration
Outcome = tuple[list[dict], dict[str, tuple[str, float, float]], Path]  # clips read back, the oracle's, the logs


def _setup(broker, tmp_path: Path, seed: int) -> tuple[Settings, list[SegmentMessage]]:
    # 8 vehicles x 6 trips of 12 s, 20 s apart, in 4-s segments: at 2x, each camera uploads every 2 s (< grace 6 s).
    settings = Settings(home=tmp_path / "home", kafka_bootstrap=broker.bootstrap, one_record_per_batch=True,
                        topic_prefix=f"r{uuid.uuid4().hex[:6]}.", grace_s=6.0, session_timeout_s=10.0)
    ensure_topics(broker.bootstrap, settings)
    blobs = LocalBlobStore(settings.blobs)
    messages: list[SegmentMessage] = []
    for s in make_scenarios(seed, 48, fleet_id="fleet-r", vehicles=8, duration=12.0, gap_s=20.0):
        messages += to_messages(write_segments(s, tmp_path / "sim" / s.scenario_id, segment_s=4.0, road_size=(64, 36),
                                               driver_size=(48, 36)), blobs)
    return settings, messages


def _offsets_read(logs: Path) -> str:
    """Where each joiner started reading each partition, and any offsets it was never handed: for a failure."""
    return "\n".join(f"{log.name}: {line.strip()[-120:]}" for log in sorted(logs.glob("*.log"))
                     for line in log.read_text().splitlines() if " from offset " in line or "never handed" in line)


def _assert_exactly_the_oracle(clips: list[dict], expected: dict[str, tuple[str, float, float]], context: str = "") -> None:
    versions: dict[str, set[tuple]] = defaultdict(set)
    for c in clips:
        versions[c["clip_id"]].add((c["start_ts"], c["end_ts"], tuple(c["views"]),
                                    tuple(sorted(s["segment_id"] for s in c["segments"]))))
    assert set(versions) == set(expected), (
        f"missing {sorted(expected[c] for c in set(expected) - set(versions))}, "
        f"unexpected {sorted(v for c in set(versions) - set(expected) for v in versions[c])}\n{context}")
    assert all(len(v) == 1 for v in versions.values()), "a clip id was sent twice with different contents"


def _exactly_the_oracle_unless_the_broker_lost_input(run: Callable[[Path], Outcome], tmp_path: Path) -> None:
    """Tansu 0.6 now and then never hands a consumer one record of a partition that two producers write at once (the
    uploads and the joiner's ticks; docs/knowledge.md): the joiner logs it ("never handed") and counts it. A run that
    differs from the oracle *and* shows such a gap is run once more on fresh topics; a difference without one, or
    twice, fails."""
    for attempt in (1, 2):
        clips, expected, logs = run(tmp_path / f"attempt{attempt}")
        try:
            _assert_exactly_the_oracle(clips, expected, _offsets_read(logs))
            return
        except AssertionError:
            if attempt == 2 or "never handed" not in _offsets_read(logs):
                raise
            warnings.warn(f"the broker never handed the joiner some input; running again:\n{_offsets_read(logs)}",
                          stacklevel=1)


def test_a_joiner_killed_mid_stream_and_restarted_loses_no_clip(broker, tmp_path: Path) -> None:
    _exactly_the_oracle_unless_the_broker_lost_input(lambda d: _killed_and_restarted(broker, d), tmp_path)


def test_two_joiners_sharing_the_partitions_give_the_clips_of_one(broker, tmp_path: Path) -> None:
    _exactly_the_oracle_unless_the_broker_lost_input(lambda d: _two_joiners(broker, d), tmp_path)


def _killed_and_restarted(broker, tmp_path: Path) -> Outcome:
    settings, messages = _setup(broker, tmp_path, seed=31)
    expected = expected_clips(messages, settings)
    env, logs = settings_env(settings), tmp_path / "logs"
    logs.mkdir(parents=True)
    first = {"first": (_spawn(["joiner"], env, logs / "first.log"), logs / "first.log")}
    replay = Replay(settings, messages)
    replay.start()
    try:
        early = wait_for_clips(settings, set(), first, timeout_s=0)
        deadline = time.monotonic() + 150
        while len(early) < 4 and time.monotonic() < deadline:  # some clips out: state and offsets are in play
            time.sleep(0.5)
            early = wait_for_clips(settings, set(), first, timeout_s=0)
        assert len(early) >= 4, (logs / "first.log").read_text()[-2000:]
        first["first"][0].send_signal(signal.SIGKILL)
        first["first"][0].wait(10)
    finally:
        _stop(first["first"][0])
    killed_at = replay.sent
    second = {"second": (_spawn(["joiner"], env, logs / "second.log"), logs / "second.log")}
    try:
        replay.finish()
        clips = wait_for_clips(settings, set(expected), second, timeout_s=240)
    finally:
        _stop(second["second"][0])
    assert len(early) < len(expected) and killed_at < len(messages)  # the kill really was mid-stream
    assert "clip " in (logs / "second.log").read_text()  # the restarted joiner did part of the job
    return clips, expected, logs


def _two_joiners(broker, tmp_path: Path) -> Outcome:
    settings, messages = _setup(broker, tmp_path, seed=32)
    expected = expected_clips(messages, settings)
    env, logs = settings_env(settings), tmp_path / "logs"
    logs.mkdir(parents=True)
    procs = {"a": (_spawn(["joiner"], env, logs / "a.log"), logs / "a.log")}
    replay = Replay(settings, messages)
    replay.start()
    try:
        deadline = time.monotonic() + 150
        while "clip " not in (logs / "a.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        procs["b"] = (_spawn(["joiner"], env, logs / "b.log"), logs / "b.log")  # joins while a is running
        joined_at = replay.sent
        replay.finish()
        clips = wait_for_clips(settings, set(expected), procs, timeout_s=240)
    finally:
        for proc, _ in procs.values():
            _stop(proc)
    assert joined_at < len(messages)  # b joined while the fleet was still uploading
    for name in ("a", "b"):  # both did part of the work
        assert "clip " in (logs / f"{name}.log").read_text(), f"joiner {name} emitted nothing"
    return clips, expected, logs
