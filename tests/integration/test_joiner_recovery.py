"""Join state survives: a joiner killed with SIGKILL mid-stream and restarted, and two joiners sharing the partitions
while one joins late (a rebalance), give exactly the oracle's clips. The fleet keeps uploading at its own pace
throughout (a replay at 4x real time). Clip ids are deterministic, so a clip sent again after a crash keeps its id
and revision; what must never happen is a clip lost, or a newest revision that differs from the oracle's (a segment
lost, or state or time lost). Any difference fails: there is no rerun."""

from __future__ import annotations

import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from schemas.messages import SegmentMessage
from streams.demo import SIMULATED_FLEET_JOIN, to_messages
from streams.infra.blobs import LocalBlobStore
from streams.infra.processes import settings_env, start_command, stop_process
from streams.infra.topics import ensure_topics
from streams.joiner.join import JoinRules, expected_fleet_clips
from streams.settings import Settings
from streams.simulate import make_scenarios, write_segments
from tests.integration.harness import Replay, wait_for_clips

pytestmark = pytest.mark.integration
SPEED = 4.0


def _setup(broker, tmp_path: Path, seed: int) -> tuple[Settings, list[SegmentMessage]]:
    # 8 vehicles x 6 trips of 12 s, one 64-s window apart, in 4-s segments: at 4x, each camera uploads every second
    # (< the 6-s vehicle-idle time) and a trip's end is 13 s of silence.
    settings = Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        one_record_per_batch=True,
        topic_prefix=f"r{uuid.uuid4().hex[:6]}.",
        vehicle_idle_s=6.0,
        settle_s=3.0,
        session_timeout_s=10.0,
        max_segment_age_s=SIMULATED_FLEET_JOIN["max_segment_age_s"],
    )
    ensure_topics(broker.bootstrap, settings)
    blobs = LocalBlobStore(settings.blobs)
    messages: list[SegmentMessage] = []
    for s in make_scenarios(seed, 48, fleet_id="fleet-r", vehicles=8, duration=12.0, gap_s=20.0):
        messages += to_messages(
            write_segments(
                s, tmp_path / "sim" / s.scenario_id, segment_s=4.0, road_size=(64, 36), driver_size=(48, 36)
            ),
            blobs,
        )
    return settings, messages


def _offsets_read(logs: Path) -> str:
    """Where each joiner started reading each partition, and any offsets it was never handed: for a failure."""
    return "\n".join(
        f"{log.name}: {line.strip()[-120:]}"
        for log in sorted(logs.glob("*.log"))
        for line in log.read_text().splitlines()
        if " from offset " in line or "never handed" in line
    )


def _oracle(messages: list[SegmentMessage], settings: Settings) -> dict[str, tuple]:
    """Each clip the rules give on the whole upload set: vehicle, extent and segments of its final revision."""
    return {
        p.clip_id: (p.vehicle_id, p.start_ts, p.end_ts, tuple(sorted(s.segment_id for s in p.segments)))
        for p in expected_fleet_clips(messages, JoinRules.from_settings(settings))
    }


def _assert_exactly_the_oracle(clips: list[dict], expected: dict[str, tuple], logs: Path) -> None:
    versions: dict[tuple[str, int], set[tuple]] = defaultdict(set)
    newest: dict[str, dict] = {}
    for c in clips:
        versions[(c["clip_id"], c["revision"])].add(
            (
                c["start_ts"],
                c["end_ts"],
                tuple(c["views"]),
                tuple(sorted(s["segment_id"] for s in c["segments"])),
            )
        )
        if c["revision"] >= newest.get(c["clip_id"], c)["revision"]:
            newest[c["clip_id"]] = c
    context = _offsets_read(logs)
    assert set(newest) == set(expected), (
        f"missing {sorted(expected[c] for c in set(expected) - set(newest))}, "
        f"unexpected {sorted(c for c in set(newest) - set(expected))}\n{context}"
    )
    got = {
        k: (
            c["vehicle_id"],
            c["start_ts"],
            c["end_ts"],
            tuple(sorted(s["segment_id"] for s in c["segments"])),
        )
        for k, c in newest.items()
    }
    assert got == expected, context
    assert all(len(v) == 1 for v in versions.values()), (
        "a clip revision was sent twice with different contents"
    )
    assert "never handed" not in context, context


def test_a_joiner_killed_mid_stream_and_restarted_loses_no_clip(broker, tmp_path: Path) -> None:
    clips, expected, logs = _killed_and_restarted(broker, tmp_path)
    _assert_exactly_the_oracle(clips, expected, logs)


def test_two_joiners_sharing_the_partitions_give_the_clips_of_one(broker, tmp_path: Path) -> None:
    clips, expected, logs = _two_joiners(broker, tmp_path)
    _assert_exactly_the_oracle(clips, expected, logs)


def _killed_and_restarted(broker, tmp_path: Path) -> tuple[list[dict], dict, Path]:
    settings, messages = _setup(broker, tmp_path, seed=31)
    expected = _oracle(messages, settings)
    env, logs = settings_env(settings), tmp_path / "logs"
    logs.mkdir(parents=True)
    first = {"first": (start_command(["joiner"], env, logs / "first.log"), logs / "first.log")}
    replay = Replay(settings, messages, speed=SPEED)
    replay.start()
    try:
        early = wait_for_clips(settings, set(), first, timeout_s=0, topic="clip-plans")
        deadline = time.monotonic() + 150
        while len(early) < 4 and time.monotonic() < deadline:  # some clips out: state and offsets are in play
            time.sleep(0.5)
            early = wait_for_clips(settings, set(), first, timeout_s=0, topic="clip-plans")
        assert len(early) >= 4, (logs / "first.log").read_text()[-2000:]
        first["first"][0].send_signal(signal.SIGKILL)
        first["first"][0].wait(10)
    finally:
        stop_process(first["first"][0])
    killed_at = replay.sent
    second = {"second": (start_command(["joiner"], env, logs / "second.log"), logs / "second.log")}
    try:
        replay.finish()
        clips = wait_for_clips(settings, set(expected), second, timeout_s=240, topic="clip-plans")
    finally:
        stop_process(second["second"][0])
    assert len(early) < len(expected) and killed_at < len(messages)  # the kill really was mid-stream
    assert "clip " in (logs / "second.log").read_text()  # the restarted joiner did part of the job
    return clips, expected, logs


def _two_joiners(broker, tmp_path: Path) -> tuple[list[dict], dict, Path]:
    settings, messages = _setup(broker, tmp_path, seed=32)
    expected = _oracle(messages, settings)
    env, logs = settings_env(settings), tmp_path / "logs"
    logs.mkdir(parents=True)
    procs = {"a": (start_command(["joiner"], env, logs / "a.log"), logs / "a.log")}
    replay = Replay(settings, messages, speed=SPEED)
    replay.start()
    try:
        deadline = time.monotonic() + 150
        while "clip " not in (logs / "a.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        # b joins while a is running
        procs["b"] = (start_command(["joiner"], env, logs / "b.log"), logs / "b.log")
        joined_at = replay.sent
        replay.finish()
        clips = wait_for_clips(settings, set(expected), procs, timeout_s=240, topic="clip-plans")
    finally:
        for proc, _ in procs.values():
            stop_process(proc)
    assert joined_at < len(messages)  # b joined while the fleet was still uploading
    for name in ("a", "b"):  # both did part of the work
        assert "clip " in (logs / f"{name}.log").read_text(), f"joiner {name} emitted nothing"
    return clips, expected, logs
